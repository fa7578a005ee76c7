"""One training's settings: a dataclass saved as ``config.json`` next to the model.

The defaults are the original recipe's where it fixed them (batch size 8, early stopping with
patience 5 on the validation loss, an 80/10/10 split per celebrity, VGG16 with ImageNet weights).
Recipe-dependent settings left as ``None`` are filled from :data:`RECIPES` by :meth:`resolved`,
so the saved file always states the values that were really used.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic

from .errors import ConfigError
from .storage import atomic_write_text

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Recipe:
    """How a backbone is fine-tuned: kept as data so a recipe is one row, not a branch."""

    pooling: str  # "flatten" (the original) or "avg"
    dropout: float
    augment: bool
    two_phase: bool  # phase 1 frozen base, phase 2 top block unfrozen
    base_trainable: bool  # in a one-phase recipe: is the base trained too?
    learning_rate: float
    fine_tune_learning_rate: float


RECIPES: dict[str, Recipe] = {
    # The product's starting point: the whole VGG16 trained with a Dense softmax on top.
    "classic": Recipe(
        pooling="flatten",
        dropout=0.0,
        augment=False,
        two_phase=False,
        base_trainable=True,
        learning_rate=1e-4,
        fine_tune_learning_rate=1e-4,
    ),
    # keras-io "Transfer learning & fine-tuning": frozen base, head, then low-rate fine-tune.
    "improved": Recipe(
        pooling="avg",
        dropout=0.3,
        augment=True,
        two_phase=True,
        base_trainable=False,
        learning_rate=1e-3,
        fine_tune_learning_rate=1e-5,
    ),
}

DETECTORS = ("hog", "mtcnn", "scrfd")
PRECISIONS = ("float32", "mixed_bfloat16")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run.

    Parameters
    ----------
    data_dir : str
        Dataset folder, one sub-folder per celebrity (stored as an absolute path).
    backbone : str
        A name from :data:`celebmodel.backbones.BACKBONES`.
    weights : str
        ``"imagenet"``, ``"none"`` (random initialisation) or a path to a weights file.
    recipe : str
        ``"improved"`` or ``"classic"`` (see :data:`RECIPES`).
    per_class : int or None
        Sample this many photos per celebrity before splitting (the original used 60).
    image_size : int or None
        Input size in pixels; ``None`` takes the backbone's own.
    faces : bool
        Detect, choose and align the face before the network sees the photo.
    augment, learning_rate, fine_tune_learning_rate, dropout : optional
        ``None`` takes the recipe's value.
    fine_tune : bool or None
        Run phase 2 of a two-phase recipe (unfreeze the top of the base); ``None`` takes the
        backbone's default.
    """

    data_dir: str
    backbone: str = "vgg16"
    weights: str = "imagenet"
    recipe: str = "improved"
    per_class: int | None = None
    seed: int = 0
    batch_size: int = 8
    patience: int = 5
    max_epochs: int = 100
    image_size: int | None = None
    faces: bool = True
    detector: str | None = None
    augment: bool | None = None
    learning_rate: float | None = None
    fine_tune_learning_rate: float | None = None
    dropout: float | None = None
    fine_tune: bool | None = None
    drop_small: bool = False
    precision: str = "float32"
    exclude: tuple[str, ...] = field(default_factory=tuple)

    def validate(self) -> TrainConfig:
        """Refuse impossible settings before any work starts."""
        from .backbones import BACKBONES

        if self.backbone not in BACKBONES:
            raise ConfigError(
                f"backbone: unknown {self.backbone!r}; choose one of {', '.join(BACKBONES)}"
            )
        if self.recipe not in RECIPES:
            raise ConfigError(
                f"recipe: unknown {self.recipe!r}; choose one of {', '.join(RECIPES)}"
            )
        if self.detector is not None and self.detector not in DETECTORS:
            raise ConfigError(f"detector: unknown {self.detector!r}; choose one of {DETECTORS}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: unknown {self.precision!r}; choose one of {PRECISIONS}")
        for name in ("batch_size", "patience", "max_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.per_class is not None and self.per_class < 3:
            raise ConfigError("per_class: at least 3 photos are needed to fill train, val and test")
        if self.image_size is not None and not 32 <= self.image_size <= 1024:
            raise ConfigError(f"image_size: must be between 32 and 1024, got {self.image_size}")
        if self.fine_tune and not RECIPES[self.recipe].two_phase:
            raise ConfigError(
                f"fine_tune: the {self.recipe} recipe trains in one phase; phase 2 needs the "
                "improved recipe"
            )
        if BACKBONES[self.backbone].kind == "embedding" and not self.faces:
            raise ConfigError(
                f"backbone {self.backbone}: works on aligned faces, --no-faces is not possible"
            )
        return self

    def resolved(self) -> TrainConfig:
        """Fill recipe and backbone defaults, so the saved file says what was really used."""
        from .backbones import BACKBONES

        self.validate()
        recipe = RECIPES[self.recipe]
        backbone = BACKBONES[self.backbone]
        return dataclasses.replace(
            self,
            data_dir=str(Path(self.data_dir).expanduser().resolve()),
            weights="pretrained" if backbone.kind == "embedding" else self.weights,
            detector=self.detector or backbone.detector,
            image_size=self.image_size or BACKBONES[self.backbone].input_size,
            augment=recipe.augment if self.augment is None else self.augment,
            learning_rate=self.learning_rate
            or (backbone.head_learning_rate if recipe.two_phase else None)
            or recipe.learning_rate,
            fine_tune_learning_rate=self.fine_tune_learning_rate
            or backbone.fine_tune_learning_rate
            or recipe.fine_tune_learning_rate,
            fine_tune=recipe.two_phase
            and (backbone.fine_tune if self.fine_tune is None else self.fine_tune),
            dropout=recipe.dropout if self.dropout is None else self.dropout,
            exclude=tuple(self.exclude),
        )

    def kept(self, split: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``split`` this training uses: all but the photos the user left out."""
        return split[~split["path"].isin(self.exclude)].reset_index(drop=True)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["exclude"] = list(self.exclude)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from JSON, naming unknown or wrong-typed keys instead of failing later (types
        checked strictly by pydantic against the fields' annotations, as JSON has them)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}")
        try:
            config = _ADAPTER.validate_json(json.dumps(data), strict=True)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            name = str(error["loc"][0]) if error["loc"] else "?"
            if error["type"] == "missing":
                raise ConfigError(f"{source}: missing setting {name}") from None
            raise ConfigError(
                f"{source}: {name} must be {known[name].type}, got {data.get(name)!r}"
            ) from None
        return config.validate()

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Write the settings (and run facts such as versions under ``"run"``) as JSON."""
        payload = self.to_dict()
        if extra:
            payload["run"] = extra
        atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the run's settings ({exc})") from exc
        if isinstance(data, dict):
            data.pop("run", None)
        return cls.from_dict(data, source=str(path))


_ADAPTER = pydantic.TypeAdapter(TrainConfig)


def hidden_settings(backbone: str, recipe: str, fine_tune: bool) -> dict[str, str]:
    """The Train form's settings that do not apply to this backbone and recipe, each with the
    reason the form gives for hiding it."""
    from .backbones import BACKBONES

    spec, steps = BACKBONES[backbone], RECIPES[recipe]
    hidden = {}
    if spec.kind == "embedding":
        hidden["weights"] = f"{backbone} uses its own pretrained face weights (works offline)"
        hidden["image size"] = f"{backbone} reads {spec.input_size}×{spec.input_size} face chips"
        hidden["face stage"] = f"{backbone} always finds and aligns the face first"
    if not steps.two_phase:
        hidden["phase 2"] = f"the {recipe} recipe trains the whole network in one phase"
        hidden["augmentation"] = f"the {recipe} recipe trains on the photos as they are"
    elif spec.kind == "embedding" and not fine_tune:
        hidden["augmentation"] = "phase 1 trains on cached embeddings; only phase 2 sees photos"
    return hidden
