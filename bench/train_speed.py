"""Training and inference speed of the CNN backbones, in images per second.

Measures the real code path: the models come from ``celebmodel.learning.model.build_model`` and are
fitted by ``CelebrityClassifier.fit`` (same compile, callbacks, phases and unfreezing as a
training run), fed by ``celebmodel.learning.pipeline.image_dataset`` reading cached PNG crops that
this script writes into a temporary folder (random pixels; weights ``none``, which is as fast as
ImageNet weights). For each backbone it times:

* ``classic full``       the classic recipe: the whole network trained (the original VGG16 run)
* ``improved phase 1``   the improved recipe's head training on the frozen base (+ augmentation)
* ``improved phase 2``   its fine-tuning from ``Backbone.fine_tune_from`` on (block5 for VGG16)
* ``inference``          ``embedding_model(model).predict`` as evaluation uses it

Each training phase runs one warm-up epoch (graph tracing, pipeline start-up) and then
``--epochs`` timed epochs; only the training part of an epoch is timed (validation excluded).

    python bench/train_speed.py --backbones vgg16 --precision float32
    python bench/train_speed.py --backbones vgg16 --precision mixed_bfloat16

The machine may be shared with other work: the load average is printed before and after.

It also prints the ceiling this CPU puts on these figures: the forward FLOPs of each model
(counted from its convolution and dense layers); two FLOP/s figures, what TensorFlow's float32
convolution reaches on one large 3x3 layer here (the best case for VGG16's layers) and the
CPU's arithmetic peak (cores x clock x 32 float32 FLOPs per cycle: two 8-wide AVX2 FMA units);
and from each the most images/s that could be trained (forward plus a backward pass of about
twice its cost: 3x the forward FLOPs) or inferred. No float32 implementation can beat the
peak row; only lower-precision arithmetic with hardware support could.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODES = ("classic", "phase1", "phase2", "inference")
MODE_TITLES = {
    "classic": "classic full fine-tune",
    "phase1": "improved phase 1 (frozen base)",
    "phase2": "improved phase 2 (top unfrozen)",
    "inference": "inference (predict)",
}
PHASES = {"full": "classic", "head": "phase1", "fine-tune": "phase2"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from celebmodel.backbones import BACKBONES
    from celebmodel.config import PRECISIONS

    cnns = [name for name, b in BACKBONES.items() if b.kind == "cnn"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=cnns, choices=cnns, metavar="NAME")
    parser.add_argument("--precision", default="float32", choices=PRECISIONS)
    parser.add_argument("--images", type=int, default=64, help="synthetic training images")
    parser.add_argument("--size", type=int, default=224, help="input size in pixels")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs after the warm-up")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--classes", type=int, default=5)
    args = parser.parse_args(argv)
    if args.images < args.batch_size or args.epochs < 1 or args.classes < 2:
        parser.error("need --images >= --batch-size, --epochs >= 1 and --classes >= 2")
    # Whole batches only, so each phase traces one graph, as a real run mostly does.
    args.images -= args.images % args.batch_size
    return args


def write_crops(folder: Path, n: int, size: int, seed: int) -> list[str]:
    """Random-pixel PNGs of ``size`` px, like the crops the face stage caches."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_mhz() -> float | None:
    """The clock the kernel reports (a VM may run above it in boost, rarely far above)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def forward_flops(model) -> float:
    """FLOPs (2 per multiply-add) of one image through the convolution and dense layers."""
    import keras

    def leaves(layer):
        for inner in getattr(layer, "layers", []):
            yield from leaves(inner) if hasattr(inner, "layers") else [inner]

    total = 0.0
    for layer in leaves(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, channels, multiplier = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += 2.0 * h * w * kh * kw * channels * multiplier
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, c_in, c_out = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += 2.0 * h * w * kh * kw * c_in * c_out / layer.groups
        elif isinstance(layer, keras.layers.Dense):
            total += 2.0 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return total


def conv_peak(batch: int, repeats: int = 5) -> float:
    """FLOP/s of TensorFlow's best case on this CPU: a 3x3, 256->256 convolution at 56x56."""
    import tensorflow as tf

    x = tf.random.normal((batch, 56, 56, 256))
    kernel = tf.random.normal((3, 3, 256, 256))
    conv = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"))
    conv(x, kernel).numpy()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        conv(x, kernel).numpy()
        best = min(best, time.perf_counter() - started)
    return 2.0 * batch * 56 * 56 * 9 * 256 * 256 / best


def timed_classifier():
    """``CelebrityClassifier`` with one more callback that times the training part of epochs."""
    import keras

    from celebmodel.learning.estimator import CelebrityClassifier

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self, phase: str, log: list[tuple[str, float]]) -> None:
            super().__init__()
            self.phase, self.log = phase, log

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()
            self.trained = None

        def on_test_begin(self, logs=None):  # validation starts: the training part is over
            if self.trained is None:
                self.trained = time.perf_counter() - self.started

        def on_epoch_end(self, epoch, logs=None):
            if self.trained is None:  # no validation this epoch
                self.trained = time.perf_counter() - self.started
            self.log.append((self.phase, self.trained))
            kind = "warm-up" if sum(p == self.phase for p, _ in self.log) == 1 else "timed"
            print(f"    {self.phase} epoch ({kind}): {self.trained:.1f} s", file=sys.stderr)

    class TimedClassifier(CelebrityClassifier):
        def __init__(self, config) -> None:
            super().__init__(config)
            self.epoch_seconds: list[tuple[str, float]] = []

        def _callbacks(self, phase: str) -> list:
            return [*super()._callbacks(phase), EpochTimer(phase, self.epoch_seconds)]

    return TimedClassifier


def bench_backbone(name: str, args: argparse.Namespace, crops, labels, val_crops, val_labels):
    """Rows (mode, images/s, seconds per timed epoch) for one backbone."""
    import numpy as np
    import pandas as pd

    from celebmodel.backbones import get_backbone
    from celebmodel.config import TrainConfig
    from celebmodel.learning.model import embedding_model
    from celebmodel.learning.pipeline import Inputs, image_dataset

    backbone = get_backbone(name)
    classes = [f"class_{i}" for i in range(args.classes)]
    rows: dict[str, tuple[float, float]] = {}
    recipes = []
    if "classic" in args.modes:
        recipes.append("classic")
    if {"phase1", "phase2", "inference"} & set(args.modes):
        recipes.append("improved")
    for recipe in recipes:
        config = TrainConfig(
            data_dir=str(Path(crops[0]).parent),
            backbone=name,
            weights="none",
            recipe=recipe,
            image_size=args.size,
            batch_size=args.batch_size,
            max_epochs=1 + args.epochs,  # warm-up + timed epochs, in each phase
            patience=2 + args.epochs,  # never stops early
            faces=False,
            precision=args.precision,
        ).resolved()
        train = Inputs(pd.DataFrame({"crop": crops, "label": [classes[i] for i in labels]}), None)
        val = Inputs(
            pd.DataFrame({"crop": val_crops, "label": [classes[i] for i in val_labels]}), None
        )
        classifier = timed_classifier()(config)
        classifier.fit(train, val, classes)  # the improved recipe runs both phases
        rows["flops"] = (forward_flops(classifier.model_), 0.0)
        by_phase: dict[str, list[float]] = {}
        for phase, seconds in classifier.epoch_seconds:
            by_phase.setdefault(phase, []).append(seconds)
        for phase, seconds in by_phase.items():
            mode = PHASES[phase]
            if mode in args.modes:
                timed = seconds[1:]  # the first epoch of each phase is the warm-up
                per_epoch = float(np.mean(timed))
                rows[mode] = (len(crops) / per_epoch, per_epoch)
        if recipe == "improved" and "inference" in args.modes:
            model = embedding_model(classifier.model_)
            data = image_dataset(crops, None, backbone, args.size, args.batch_size)
            model.predict(data.take(1), verbose=0)  # warm-up: tracing
            started = time.perf_counter()
            model.predict(data, verbose=0)
            seconds = time.perf_counter() - started
            rows["inference"] = (len(crops) / seconds, seconds)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import keras
    import numpy as np
    import tensorflow as tf

    if args.precision == "mixed_bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")  # as training does
    flags = cpu_flags()
    bf16 = sorted(flags & {"avx512_bf16", "amx_bf16", "avx512f"}) or ["none"]
    print(
        f"CPU {cpu_name()}, {os.cpu_count()} cores, bf16-related flags: {', '.join(bf16)}; "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python {sys.version.split()[0]}"
    )
    print(
        f"{args.images} synthetic images at {args.size} px, batch {args.batch_size}, "
        f"{args.epochs} timed epoch(s) after a warm-up epoch, precision {args.precision}; "
        f"load average before: {load_average()}"
    )
    rng = np.random.default_rng(0)
    labels = rng.integers(0, args.classes, args.images)
    val_labels = rng.integers(0, args.classes, args.batch_size)
    results = []
    ceilings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="celebmodel-bench-") as tmp:
        crops = write_crops(Path(tmp) / "train", args.images, args.size, seed=1)
        val_crops = write_crops(Path(tmp) / "val", args.batch_size, args.size, seed=2)
        for name in args.backbones:
            started = time.perf_counter()
            rows = bench_backbone(name, args, crops, labels, val_crops, val_labels)
            ceilings[name] = rows.pop("flops")[0]
            for mode in MODES:
                if mode in rows:
                    results.append((name, mode, *rows[mode]))
                    print(
                        f"  {name} {MODE_TITLES[mode]}: {rows[mode][0]:.2f} images/s",
                        file=sys.stderr,
                    )
            print(f"  {name} done in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    print()
    header = f"{'backbone':16s} {'precision':15s} {'mode':34s} {'images/s':>9s} {'s/epoch':>8s}"
    print(header)
    print("-" * len(header))
    for name, mode, rate, seconds in results:
        print(f"{name:16s} {args.precision:15s} {MODE_TITLES[mode]:34s} {rate:9.2f} {seconds:8.1f}")
    print(f"\nload average after: {load_average()} (on {os.cpu_count()} cores)")

    measured = conv_peak(args.batch_size)
    mhz = cpu_mhz()
    arithmetic = (os.cpu_count() or 1) * mhz * 1e6 * 32 if mhz else None
    print(
        f"\nceiling: TensorFlow's float32 3x3 convolution reaches {measured / 1e9:.0f} GFLOP/s "
        f"here (batch {args.batch_size}); the CPU's float32 arithmetic peak is "
        + (f"{arithmetic / 1e9:.0f} GFLOP/s" if arithmetic else "unknown")
        + f" ({os.cpu_count()} cores x {mhz or 0:.0f} MHz x 32 FLOPs/cycle)"
    )
    header = (
        f"{'backbone':16s} {'GFLOP/image':>11s} {'train max (TF conv)':>20s} "
        f"{'train max (peak)':>17s} {'infer max (TF conv)':>20s}"
    )
    print(header)
    print("-" * len(header))
    for name, flops in ceilings.items():
        at_peak = f"{arithmetic / (3 * flops):17.2f}" if arithmetic else f"{'n/a':>17s}"
        print(
            f"{name:16s} {flops / 1e9:11.1f} {measured / (3 * flops):20.2f} {at_peak} "
            f"{measured / flops:20.2f}"
        )
    classic = [rate for name, mode, rate, _ in results if (name, mode) == ("vgg16", "classic")]
    if classic and args.size == 224:
        bound = measured / (3 * ceilings["vgg16"])
        verdict = "meets" if classic[0] >= 4 else "misses"
        print(
            f"classic VGG16 full fine-tune: {classic[0]:.2f} images/s ({verdict} the 4/s target; "
            f"{classic[0] / bound:.0%} of the {bound:.2f}/s TensorFlow's convolution allows"
            + (
                f", {arithmetic / (3 * ceilings['vgg16']):.2f}/s at the arithmetic peak)"
                if arithmetic
                else ")"
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
