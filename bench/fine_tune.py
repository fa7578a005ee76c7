"""Phase 1 only against phase 2 (fine-tuning dlib128's last stage): accuracy and strangers.

For each pair (people the model knows, strangers it never saw) and each seed, one dlib128 run
with ``fine_tune=False`` and one with ``fine_tune=True`` on the same split (all photos,
80/10/10), each evaluated on its test photos and on every stranger photo with
``evaluate_run(..., unknown_dir=...)``, the code path of ``celebmodel evaluate --unknown``.
The phase 2 runs keep their fine-tuned weights whatever the validation loss says (the
product keeps them only when it went down), so the table shows what fine-tuning itself does;
the "product" rows pick, per seed, the run the product's rule would have kept.

    python bench/fine_tune.py                      # lfw_10to19 vs lfw, and lfw vs lfw_10to19
    python bench/fine_tune.py --seeds 2 --work /tmp/ft
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--work", help="folder for runs and caches (default: a temporary one)")
    parser.add_argument(
        "--pairs", default="lfw_10to19:lfw,lfw:lfw_10to19", help="known:strangers,..."
    )
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="celebbench-"))
    os.environ["CELEBMODEL_DATA"] = str(work / "appdata")
    quiet = logging.StreamHandler()
    quiet.setLevel(logging.ERROR)
    logging.getLogger("celebmodel").addHandler(quiet)

    from celebmodel.config import TrainConfig
    from celebmodel.learning.estimator import CelebrityClassifier
    from celebmodel.learning.evaluation import evaluate_run
    from celebmodel.learning.training import train_run

    CelebrityClassifier._keep_fine_tune = lambda self: True  # measure phase 2 itself

    rows = []
    for pair in args.pairs.split(","):
        known, strangers = pair.split(":")
        for seed in range(args.seeds):
            for fine_tune in (False, True):
                config = TrainConfig(
                    data_dir=str(SHARED / known), backbone="dlib128", seed=seed, fine_tune=fine_tune
                )
                name = f"{known}-seed{seed}-{'phase2' if fine_tune else 'phase1'}"
                start = time.perf_counter()
                run = train_run(config, work / "runs" / name)
                seconds = time.perf_counter() - start
                test = evaluate_run(run, "test", unknown_dir=SHARED / strangers)["test"]
                open_set = test["open_set"]
                phases = run.status().get("phases") or {}
                rows.append(
                    {
                        "known": known,
                        "strangers": strangers,
                        "seed": seed,
                        "phase 2": fine_tune,
                        "kept": phases.get("kept"),
                        "val loss p1": phases.get("head"),
                        "val loss p2": phases.get("fine-tune"),
                        "accuracy": test["accuracy"],
                        "f1_weighted": test["f1_weighted"],
                        "strangers rejected": open_set["unknown_rejected"],
                        "known accepted": open_set["known_accepted"],
                        "auc": open_set["auc"],
                        "n_test": test["n"],
                        "n_strangers": open_set["n_unknown"],
                        "seconds": seconds,
                    }
                )
                print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1))
    frame = pd.DataFrame(rows)
    product = []
    for _, pair in frame.groupby(["known", "seed"]):
        tuned = pair[pair["phase 2"]].iloc[0]
        better = tuned["val loss p2"] < tuned["val loss p1"]
        product.append({**pair[pair["phase 2"] == better].iloc[0].to_dict(), "phase 2": "product"})
    frame = pd.concat([frame, pd.DataFrame(product)], ignore_index=True)
    frame["phase 2"] = frame["phase 2"].astype(str)
    print("\n## every run\n")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\n## mean over seeds\n")
    columns = ["accuracy", "f1_weighted", "strangers rejected", "known accepted", "auc", "seconds"]
    summary = frame.groupby(["known", "strangers", "phase 2"])[columns].mean()
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
