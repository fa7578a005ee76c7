"""The face stage of a training on a Ray cluster: crops and embeddings of a dataset's photos,
computed by actors into the shared face cache under the keys the local engine uses."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..backbones import get_backbone
from ..config import TrainConfig
from ..faces.cache import cache_dir, embed_files, prepare
from ..faces.detection import FaceStage, face_stage
from ..progress import BarFactory, quiet_bar
from .engine import (
    actor_setup,
    cluster,
    die_if_asked,
    driver_settings,
    import_ray,
    plan,
    run_blocks,
)


class _FaceWorker:
    """A Ray actor: the face stage (and the face network) loaded once, filling the face cache
    for one block of dataset photos per call."""

    def __init__(self, settings: dict[str, Any]) -> None:
        actor_setup(settings)
        from ..faces.network import FaceEmbedder

        self.settings = settings
        self.stage = FaceStage(**settings["stage"])
        self.embedder = FaceEmbedder(settings["network"]) if settings["embed"] else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        die_if_asked(self.settings)
        answers = []
        for items in batch["items"]:
            paths = [path for path, _ in json.loads(str(items))]
            records = prepare(self.settings["root"], paths, self.stage, self.settings["cache"])
            crops = [record["crop"] for record in records if record["crop"]]
            if self.embedder is not None:
                embed_files(crops, self.embedder)
            answers.append(json.dumps({"photos": len(paths), "crops": len(crops)}))
        return {"block": batch["block"], "answer": np.array(answers)}


def prepare_faces(
    config: TrainConfig,
    paths: Sequence[str],
    root: str | Path | None = None,
    *,
    address: str | None = None,
    workers: int | None = None,
    bar: BarFactory = quiet_bar,
    block_size: int | None = None,
) -> int:
    """Crops (and, for a face network, embeddings) of the dataset photos ``paths`` (relative
    to ``root``, default the config's dataset) computed by Ray actors into this machine's face
    cache, under the keys the local engine uses: :func:`celebmodel.learning.pipeline.prepare_inputs`
    then finds every photo done. Returns the number of crops.

    The cache is the resume: photos cached before are neither read nor detected again.
    """
    import_ray()
    stage = face_stage(config)
    folder = Path(root if root is not None else config.data_dir).expanduser().resolve()
    embed = get_backbone(config.backbone).kind == "embedding"
    blocks = plan([(path, path) for path in paths], [str(folder), stage.key(), embed], block_size)
    settings = {
        **driver_settings(),
        "root": str(folder),
        "cache": str(cache_dir()),
        "stage": asdict(stage),
        "embed": embed,
        "network": config.backbone,
    }
    sizes = {block.id: len(block.items) for block in blocks}
    crops, done = 0, set()
    with bar(desc="faces", total=len(paths), unit="photo") as progress:
        if blocks:
            with cluster(address) as ray:
                for block_id, answer in run_blocks(ray, _FaceWorker, settings, blocks, workers):
                    if block_id in done:
                        continue
                    done.add(block_id)
                    crops += json.loads(answer)["crops"]
                    progress.update(sizes[block_id])
    return crops
