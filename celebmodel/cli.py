"""``python -m celebmodel`` / ``celebmodel``: the same code paths the app uses.

Heavy libraries (TensorFlow) are imported inside the commands, so ``--help`` is instant.
Exit codes: 0 success, 1 the work failed (message on stderr), 2 bad usage, 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import DETECTORS, PRECISIONS, RECIPES, TrainConfig
from .errors import Cancelled, CelebmodelError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``minimum`` (else a usage error)."""

    def check(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return check


_positive = _at_least(1)


def _positive_float(text: str) -> float:
    """An argparse type: a finite number above 0 (else a usage error)."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def cmd_split(args: argparse.Namespace) -> int:
    from .dataset import describe_duplicates, find_duplicates, make_split, scan_dataset, write_split

    scan = scan_dataset(args.data)
    print(scan.report(), file=sys.stderr)
    split, warnings = make_split(
        scan, per_class=args.per_class, seed=args.seed, drop_small=args.drop_small
    )
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    write_split(split, args.out)
    for line in describe_duplicates(find_duplicates(scan.root, split)):
        print(f"warning: {line}", file=sys.stderr)
    counts = split.groupby(["label", "subset"]).size().unstack(fill_value=0)
    print(counts[["train", "val", "test"]].to_string())
    print(f"wrote {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .runs import Run, new_run_dir
    from .training import train_run

    if args.config:
        if args.data:
            raise CelebmodelError(
                f"{args.config}: give the settings file or a dataset folder, not both"
            )
        config = TrainConfig.load(args.config)
    elif not args.data:
        raise CelebmodelError("train: give a dataset folder (or --config FILE)")
    else:
        config = _config_from(args)
    run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(config.backbone)
    print(f"run directory: {run_dir}", file=sys.stderr)
    if args.name or args.notes:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        Run(Path(run_dir).resolve()).set_meta(args.name, args.notes)
    engine = {}  # the local engine: train_run's defaults
    if args.engine == "ray":
        engine = {"engine": "ray", "ray_address": args.ray_address, "workers": args.workers}
    run = train_run(config, run_dir, progress=True, **engine)
    _print_metrics(run)
    return 0


def _config_from(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        data_dir=args.data,
        backbone=args.backbone,
        weights=args.weights,
        recipe=args.recipe,
        per_class=args.per_class,
        seed=args.seed,
        batch_size=args.batch_size,
        patience=args.patience,
        max_epochs=args.max_epochs,
        image_size=args.image_size,
        faces=args.faces,
        detector=args.detector,
        augment=args.augment,
        fine_tune=args.fine_tune,
        drop_small=args.drop_small,
        precision=args.precision,
        exclude=tuple(args.exclude or ()),
    ).validate()


def _print_metrics(run: object) -> None:
    for subset in ("train", "val", "test"):
        metrics = run.metrics(subset) or {}
        if metrics.get("accuracy") is not None:
            print(
                f"{subset:5s} accuracy {metrics['accuracy']:.3f}  "
                f"weighted F1 {metrics['f1_weighted']:.3f}  n {metrics['n']}"
            )
    test = run.metrics("test") or {}
    if test.get("overfitting"):
        print(test["overfitting"])


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_run
    from .metrics import ORIGINAL
    from .progress import console_bar
    from .runs import load_run

    run = load_run(args.run)
    results = evaluate_run(run, args.subset, unknown_dir=args.unknown, bar=console_bar)
    for subset, metrics in results.items():
        print(
            f"[{subset}] n={metrics['n']} accuracy={metrics['accuracy']:.3f} "
            f"(original recipe on test: {ORIGINAL['accuracy']:.2f})"
        )
        print(
            f"  weighted precision {metrics['precision_weighted']:.3f} recall "
            f"{metrics['recall_weighted']:.3f} F1 {metrics['f1_weighted']:.3f}; "
            f"macro F1 {metrics['f1_macro']:.3f}; top-5 {metrics['top5_accuracy']:.3f}"
        )
        if metrics.get("open_set"):
            print(f"  open set: {json.dumps(metrics['open_set'])}")
        print(f"  {metrics['overfitting']}")
        print(f"  wrote {run.file(f'metrics_{subset}.json')}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .albums import identify_album, photo_results
    from .images import photo_files
    from .open_set import score_for
    from .progress import console_bar, quiet_bar
    from .recognize import Recognizer

    threshold = args.threshold
    if args.min_similarity is not None:
        threshold = score_for(args.min_similarity)
    photos = [(str(path), path) for path in photo_files(args.images)]
    bar = console_bar if args.csv else quiet_bar
    if args.engine == "ray":  # blocks on the cluster, the CSV merged (and grouped) here
        from .ray_engine import identify_folder

        album = identify_folder(
            args.run,
            photos,
            args.csv,
            threshold,
            args.top_k,
            group=args.group,
            address=args.ray_address,
            workers=args.workers,
            bar=bar,
        )
    else:
        recognizer = Recognizer.from_run(args.run, top_k=args.top_k)
        album = identify_album(recognizer, photos, threshold, bar=bar)
        if args.group:
            album.group(recognizer.gallery, recognizer.gallery_labels)
        if args.csv:
            album.write_csv(args.csv)
    if args.csv:
        print(
            f"wrote {args.csv}: {len(album.rows)} face(s) in {len(photos)} photo(s)",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(photo_results(album), indent=2))
    elif not args.csv:
        for result in photo_results(album):
            if result["error"]:
                print(f"{result['image']}: {result['error']}")
            for face in result["faces"]:
                tops = ", ".join(f"{t['label']} {t['probability']:.2f}" for t in face["top_k"])
                group = f" group {face['group']}" if face.get("group") else ""
                print(
                    f"{result['image']}: {face['label']} at {face['box']} similarity "
                    f"{face['similarity']:.2f}{group} ({tops})"
                )
    for error in album.errors:
        print(f"error: {error['error']}", file=sys.stderr)  # it names the photo
    return 0 if len(album.errors) < len(photos) else 1


def cmd_enroll(args: argparse.Namespace) -> int:
    from .people import enroll
    from .runs import load_run

    report = enroll(load_run(args.run), args.name, args.photos)
    for problem in report["skipped"]:
        print(f"skipped {problem['path']}: {problem['reason']}", file=sys.stderr)
    print(
        f"enrolled {args.name} from {report['n_photos']} photo(s) into {args.run} "
        f"in {report['seconds']:.1f} s"
    )
    return 0


def cmd_people(args: argparse.Namespace) -> int:
    from . import people
    from .runs import load_run

    run = load_run(args.run)
    if args.action == "list":
        roster = people.roster(run)
        roster["removed"] = roster["removed"].map({True: "removed", False: ""})
        print(roster.drop(columns="face").to_string(index=False))
    elif args.action == "add":
        report = people.enroll(run, args.name, args.photos, keep_faces=args.keep_faces)
        for problem in report["skipped"]:
            print(f"skipped {problem['path']}: {problem['reason']}", file=sys.stderr)
        print(
            f"added {report['n_photos']} photo(s) of {report['name']} in {report['seconds']:.1f} s"
        )
    elif args.action == "rename":
        people.rename(run, args.label, args.name)
        print(f"{args.label} is now shown as {args.name}")
    elif args.action == "remove":
        people.remove(run, args.label)
        print(f"removed {args.label} from {run.title}")
    else:
        people.restore(run, args.label)
        print(f"restored {args.label} in {run.title}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import API_KEY_ENV, MB, serve

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    serve(
        args.run,
        host=args.host,
        port=args.port,
        api_key=api_key,
        max_bytes=int(args.max_upload_mb * MB),
        top_k=args.top_k,
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    folder = export(args.run, args.format, args.dir)  # a missing package is said first
    print(f"wrote {folder} ({args.format}; see {folder / 'README.md'})")
    return 0


def cmd_fetch_lfw(args: argparse.Namespace) -> int:
    from .sources import fetch_lfw

    scan = fetch_lfw(args.dest, min_faces=args.min_faces)
    print(scan.report())
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from .runs import runs_table

    table = runs_table(args.root)
    print(table.to_string(index=False) if len(table) else "no runs")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .backbones import BACKBONES

    parser = argparse.ArgumentParser(
        prog="celebmodel",
        description="Celebrity face recognition: split, train, evaluate, predict.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    split = commands.add_parser("split", help="write a per-celebrity 80/10/10 split.csv")
    split.add_argument("data", help="dataset folder: one sub-folder per celebrity")
    split.add_argument("--out", required=True, help="where to write split.csv")
    split.set_defaults(func=cmd_split)

    train = commands.add_parser("train", help="fine-tune a backbone into a run directory")
    train.add_argument("data", nargs="?", help="dataset folder: one sub-folder per celebrity")
    train.add_argument(
        "--config",
        metavar="FILE",
        help="train with the settings of this config.json (what the app hands its trainer)",
    )
    train.add_argument("--run-dir", help="run directory (default runs/<timestamp>-<backbone>)")
    train.add_argument("--name", help="what to call the run (default: its folder name)")
    train.add_argument("--notes", help="a few words about the run")
    train.add_argument("--backbone", default="vgg16", choices=list(BACKBONES))
    train.add_argument("--weights", default="imagenet", help="imagenet, none (random) or a file")
    train.add_argument("--recipe", default="improved", choices=list(RECIPES))
    train.add_argument("--batch-size", type=_positive, default=8)
    train.add_argument("--patience", type=_positive, default=5)
    train.add_argument("--max-epochs", type=_positive, default=100)
    train.add_argument("--image-size", type=int, help="input size in pixels (default: backbone's)")
    train.add_argument(
        "--faces",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="detect and align the face first (default on)",
    )
    train.add_argument("--detector", default="hog", choices=DETECTORS)
    train.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="augment the training subset (default: the recipe's choice)",
    )
    train.add_argument(
        "--fine-tune",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="improved recipe: run phase 2, unfreezing the top of the network "
        "(default: the backbone's choice)",
    )
    train.add_argument("--precision", default="float32", choices=PRECISIONS)
    train.add_argument("--exclude", nargs="*", metavar="PATH", help="photos to leave out")
    train.set_defaults(func=cmd_train)

    for sub in (split, train):
        sub.add_argument("--per-class", type=_positive, help="sample N photos per celebrity first")
        sub.add_argument("--seed", type=_at_least(0), default=0)
        sub.add_argument(
            "--drop-small",
            action="store_true",
            help="drop celebrities with too few photos (with a warning) instead of failing",
        )

    evaluate = commands.add_parser("evaluate", help="metrics of a finished run")
    evaluate.add_argument("run", help="run directory")
    evaluate.add_argument("--subset", default="test", choices=["test", "val", "train", "all"])
    evaluate.add_argument("--unknown", help="folder of people outside the training set")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = commands.add_parser("predict", help="identify the faces in photos")
    predict.add_argument("run", help="run directory")
    predict.add_argument(
        "images", nargs="+", metavar="PATH", help="photos, or folders of them (searched deeply)"
    )
    predict.add_argument("--top-k", type=_positive, default=5)
    unknown = predict.add_mutually_exclusive_group()
    unknown.add_argument(
        "--threshold", type=float, help="unknown above this open-set score (default: calibrated)"
    )
    unknown.add_argument(
        "--min-similarity", type=float, help="unknown below this similarity (0..1)"
    )
    predict.add_argument("--json", action="store_true", help="one JSON object per image")
    predict.add_argument(
        "--csv",
        metavar="FILE",
        help="write one row per face: photo, face, box, label, nearest, similarity, known, group",
    )
    predict.add_argument(
        "--group", action="store_true", help="number the groups of unknown faces by person"
    )
    predict.set_defaults(func=cmd_predict)

    for sub in (train, predict):
        sub.add_argument(
            "--engine",
            default="local",
            choices=["local", "ray"],  # ray_engine.ENGINES (kept light here)
            help="where the photos are processed: this machine (default), or a Ray cluster "
            "(train: the face stage; needs pip install -e '.[ray]')",
        )
        sub.add_argument(
            "--ray-address",
            metavar="ADDRESS",
            help="--engine ray: join this cluster (default $RAY_ADDRESS; neither: start a "
            "local one)",
        )
        sub.add_argument(
            "--workers",
            type=_positive,
            help="--engine ray: actors, each loading the model once (default: one per CPU)",
        )

    enroll = commands.add_parser(
        "enroll", help="add a celebrity to a dlib128 run from a few photos"
    )
    enroll.add_argument("run", help="run directory")
    enroll.add_argument("name", help="the celebrity's label, e.g. Ada_Lovelace")
    enroll.add_argument("photos", nargs="+", metavar="PHOTO", help="photos or a folder of them")
    enroll.set_defaults(func=cmd_enroll)

    roster = commands.add_parser(
        "people", help="who a dlib128 run knows: list, add, rename, remove"
    )
    roster.add_argument("run", help="run directory")
    actions = roster.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every person, their photos, trained or added later")
    add = actions.add_parser("add", help="add a person, or photos of one the run knows")
    add.add_argument("name", help="a new person's name, or the label or name of a known one")
    add.add_argument("photos", nargs="+", metavar="PHOTO", help="photos or a folder of them")
    add.add_argument(
        "--keep-faces", action="store_true", help="keep the aligned faces in the run (thumbnails)"
    )
    rename = actions.add_parser("rename", help="change the name shown for a person")
    rename.add_argument("label")
    rename.add_argument("name")
    for action, text in (("remove", "take a person out"), ("restore", "put a removed one back")):
        sub = actions.add_parser(action, help=text)
        sub.add_argument("label")
    roster.set_defaults(func=cmd_people)

    serve = commands.add_parser(
        "serve",
        help="an HTTP API for one run: POST /identify, GET /people /health /version, docs at /docs",
        description="Serve one run as an HTTP API (FastAPI + uvicorn) until Ctrl-C. "
        "POST /identify takes a photo (multipart field 'file') and answers the JSON of "
        "predict --json; 400 for an unusable photo, 401 without the API key, 413 over the "
        "size limit. The API docs are at /docs.",
    )
    serve.add_argument("run", help="run directory")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: this machine only)"
    )
    serve.add_argument("--port", type=_at_least(0), default=8000, help="port (0: any free one)")
    serve.add_argument(
        "--api-key",
        help="require this key in the X-API-Key header (default: $CELEBMODEL_API_KEY; "
        "the variable keeps it out of the process list)",
    )
    serve.add_argument(
        "--max-upload-mb",
        type=_positive_float,
        default=20.0,
        help="largest request body in MB (default 20; 413 above)",
    )
    serve.add_argument("--top-k", type=_positive, default=5, help="default top-k per face")
    serve.set_defaults(func=cmd_serve)

    export = commands.add_parser(
        "export",
        help="the run's network for use elsewhere (Keras, SavedModel, TFLite, TF.js)",
        description="Write the run's network (aligned face in, embedding and class "
        "probabilities out) into a new folder DIR with labels.json, calibration.json "
        "(threshold), centroids.npy and a README.md giving the input spec and a Python "
        "example. tfjs needs the optional tensorflowjs package.",
    )
    export.add_argument("run", help="run directory")
    export.add_argument(
        "dir", metavar="DIR", help="new folder to write (must not exist, or be empty)"
    )
    export.add_argument(
        "--format",
        default="keras",
        choices=["keras", "savedmodel", "tflite", "tfjs"],  # export.FORMATS (kept light here)
    )
    export.set_defaults(func=cmd_export)

    fetch = commands.add_parser("fetch-lfw", help="download Labeled Faces in the Wild (online)")
    fetch.add_argument("dest", help="folder to write the dataset into")
    fetch.add_argument("--min-faces", type=_positive, default=60)
    fetch.set_defaults(func=cmd_fetch_lfw)

    runs = commands.add_parser("runs", help="list runs and their state")
    runs.add_argument("--root", help="runs folder (default $CELEBMODEL_RUNS or runs/)")
    runs.set_defaults(func=cmd_runs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors the user can fix are one line on stderr, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (Cancelled, KeyboardInterrupt) as exc:
        print(f"cancelled: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    except (CelebmodelError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
