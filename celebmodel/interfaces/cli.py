"""``python -m celebmodel`` / ``celebmodel``: the same code paths the app uses.

Heavy libraries (TensorFlow) are imported inside the commands, so ``--help`` is instant.
Exit codes: 0 success, 1 the work failed (message on stderr), 2 bad usage, 130 cancelled.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..config import DETECTORS, PRECISIONS, RECIPES, TrainConfig
from ..data.videos import DEFAULT_FPS
from ..errors import Cancelled, CelebmodelError

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
    from ..data.dataset import (
        describe_duplicates,
        find_duplicates,
        make_split,
        scan_dataset,
        write_split,
    )

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
    from ..learning.training import train_run
    from ..runs.run import Run, new_run_dir

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
    """The settings of ``train DATA --option …``: every TrainConfig field the parser has."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"data_dir", "exclude"}
    chosen = {name: getattr(args, name) for name in fields if hasattr(args, name)}
    return TrainConfig(data_dir=args.data, exclude=tuple(args.exclude or ()), **chosen)


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
    if args.protocol:
        return _open_set_protocol(args)
    if args.folder:
        raise CelebmodelError(f"{args.folder}: a folder is read only with --protocol open-set")
    from ..learning.evaluation import evaluate_run
    from ..progress import console_bar
    from ..runs.run import load_run
    from ..scoring.metrics import ORIGINAL

    run = load_run(args.run)
    if run.scoring == "gallery":  # no held-out photos of its own: its figures are measured
        return _stored_protocol(run)
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


def _stored_protocol(run: Any) -> int:
    """A gallery model's figures as its build measured them (``protocol.json``)."""
    from ..reports.figures import plain_words

    protocol = run.read_json("protocol.json") or {}
    if "figures" not in protocol:
        raise CelebmodelError(f"{run.file('protocol.json')}: no open-set figures; measure them "
                              "with --protocol open-set LFW_FOLDER")
    print(plain_words(protocol, run.read_json("calibration.json") or {}).replace("**", ""))
    print(f"open-set protocol as built, on {protocol['photos']:,} faces of "
          f"{protocol['people']:,} people; mean / sd / mean - sd (measure again: "
          f"celebmodel evaluate {run.name} --protocol open-set LFW_FOLDER)")
    _print_figures(protocol["figures"], "  ")
    return 0


def _print_figures(figures: dict, indent: str) -> None:
    """The open-set protocol's figures, one measure a line: mean / sd / mean - sd."""
    from ..scoring.protocol import METRICS

    for name in METRICS:
        value = figures[name]
        print(f"{indent}{name:12s} {value['mean']:.4f} / {value['sd']:.4f} / "
              f"{value['mean_minus_sd']:.4f}")


def _open_set_protocol(args: argparse.Namespace) -> int:
    from ..progress import console_bar
    from ..recognition.public_figures import protocol_figures
    from ..runs.run import load_run
    from ..storage import atomic_write_json

    if not args.folder:
        raise CelebmodelError("--protocol open-set: give an LFW folder (one folder per person)")
    run = load_run(args.run)
    if run.scoring != "gallery":
        raise CelebmodelError(f"{args.run}: the open-set protocol measures gallery models "
                              "(lfw-public-figures and copies of it)")
    figures = protocol_figures(args.folder, bar=console_bar, network=run.config().backbone)
    print(f"open-set protocol on {figures['photos']:,} faces of {figures['people']:,} people "
          f"({args.folder}), {figures['trials']} trials; mean / sd / mean - sd")
    for method in ("figures", "baseline"):
        print(f"  {figures[f'{method}_title']}:")
        _print_figures(figures[method], "    ")
    if args.json:
        atomic_write_json(args.json, figures)
        print(f"wrote {args.json}")
    return 0


def cmd_build_lfw_model(args: argparse.Namespace) -> int:
    from ..progress import console_bar
    from ..recognition.public_figures import NETWORK, build, folder, read_people

    people = read_people(args.names) if args.names else None
    target = build(
        args.lfw, args.out, tuple(args.missing_ok or ()), console_bar, people,
        args.network or NETWORK, args.strangers, args.known_elsewhere,
    )
    print(f"wrote {target}" + (" (the built-in model)" if target == folder() else ""))
    return 0


def cmd_copy(args: argparse.Namespace) -> int:
    from ..runs.run import copy_run, load_run

    run = load_run(args.run)
    copy = copy_run(run, args.name)
    print(f"copied {run.title} to {copy.path} ({copy.title}): people can now be added, "
          "renamed and removed")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.engine != "ray":
        return _predict(args)
    from ..cluster.engine import cluster

    with cluster(args.ray_address):  # one cluster for the photos and the videos
        return _predict(args)


def _predict(args: argparse.Namespace) -> int:
    from ..albums.album import identify_album, photo_results
    from ..data.videos import media_files
    from ..progress import console_bar, quiet_bar
    from ..recognition.recognize import Recognizer
    from ..runs.run import load_run
    from ..scoring.open_set import score_for, threshold_for

    threshold = args.threshold
    if args.min_similarity is not None:
        if load_run(args.run).scoring == "gallery":
            raise CelebmodelError(
                "--min-similarity: this model decides on match confidence; use --min-confidence"
            )
        threshold = score_for(args.min_similarity)
    if args.min_confidence is not None:
        if not 0 < args.min_confidence < 1:
            raise CelebmodelError("--min-confidence: a number between 0 and 1, e.g. 0.99")
        try:
            threshold = threshold_for(load_run(args.run).read_json("calibration.json") or {},
                                      args.min_confidence)
        except ValueError:
            raise CelebmodelError(f"{args.run}: no stranger scores to set a confidence "
                                  "threshold (an older run: use --min-similarity)") from None
    photo_paths, videos = media_files(args.images)
    photos = [(str(path), path) for path in photo_paths]
    bar = console_bar if args.csv or args.vtt else quiet_bar
    book = None
    if args.group and args.csv:  # groups that last, beside the CSV
        from ..albums.groups import AlbumGroups, beside

        book = AlbumGroups.open(beside(args.csv), load_run(args.run).embeddings_id)
    recognizer = None
    if args.engine == "ray":  # blocks on the cluster, the CSV merged (and grouped) here
        from ..albums.ray_album import identify_folder

        album = identify_folder(
            args.run,
            photos,
            args.csv,
            threshold,
            args.top_k,
            group=args.group,
            book=book,
            address=args.ray_address,
            workers=args.workers,
            bar=bar,
        )
    else:
        recognizer = Recognizer.from_run(args.run, top_k=args.top_k)
        album = identify_album(recognizer, photos, threshold, bar=bar)
        if args.group:
            album.group(recognizer.cuts, book)
        if args.csv and photos:
            album.write_csv(args.csv)
    if book is not None and book.notice:
        print(f"warning: {book.notice}", file=sys.stderr)  # a damaged file, set aside
    if args.csv and photos:
        print(
            f"wrote {args.csv}: {len(album.rows)} face(s) in {len(photos)} photo(s)",
            file=sys.stderr,
        )
    timelines, failed = (_predict_videos(args, recognizer, videos, threshold, bool(photos), bar)
                         if videos else ([], 0))
    if args.json:
        print(json.dumps(photo_results(album) + [t.to_dict() for t in timelines], indent=2))
    elif not args.csv and not args.vtt:
        for result in photo_results(album):
            if result["error"]:
                print(f"{result['image']}: {result['error']}")
            for face in result["faces"]:
                print(f"{result['image']}: {_face_line(face)}")
        for timeline in timelines:
            for person in timeline.people:
                print(f"{timeline.info.name}: {_person_line(person)}")
    for error in album.errors:
        print(f"error: {error['error']}", file=sys.stderr)  # it names the photo
    done = len(photos) - len(album.errors) + len(videos) - failed
    return 0 if done > 0 else 1


def _predict_videos(
    args: argparse.Namespace, recognizer: Any, videos: list[Path], threshold: float | None,
    photos_too: bool, bar: Any,
) -> tuple[list[Any], int]:
    """``predict``'s videos: each identified (on this machine, or in segments on the cluster
    with ``--engine ray``), its occurrences written where asked (``--csv``: beside the
    photos' CSV when there are photos too; ``--vtt``: the file, or a folder with one file per
    video)."""
    from ..errors import VideoError
    from ..video.outputs import write_csv, write_vtt

    if args.engine == "ray":
        from ..video.ray_video import identify_videos

        results = identify_videos(args.run, videos, args.fps, threshold,
                                  address=args.ray_address, workers=args.workers, bar=bar,
                                  samples=args.samples)
    else:
        results = _each_video(args, recognizer, videos, threshold, bar)
    timelines, failed = [], 0
    for result in results:
        if isinstance(result, VideoError):
            print(f"error: {result}", file=sys.stderr)
            failed += 1
            continue
        timelines.append(result)
        if result.stopped:
            print(f"warning: {result.stopped}", file=sys.stderr)
    if args.csv and timelines:
        path = Path(args.csv)
        if photos_too:
            path = path.with_name(f"{path.stem}-videos{path.suffix or '.csv'}")
        write_csv(path, timelines)
        print(f"wrote {path}: the occurrences of {len(timelines)} video(s)", file=sys.stderr)
    if args.vtt and timelines:
        if len(videos) == 1:
            write_vtt(args.vtt, timelines[0])
            print(f"wrote {args.vtt}", file=sys.stderr)
        else:
            folder = Path(args.vtt)
            folder.mkdir(parents=True, exist_ok=True)
            for timeline in timelines:
                write_vtt(folder / f"{Path(timeline.info.name).stem}.vtt", timeline)
            print(f"wrote {len(timelines)} WebVTT files in {folder}", file=sys.stderr)
    return timelines, failed


def _each_video(args: argparse.Namespace, recognizer: Any, videos: list[Path],
                threshold: float | None, bar: Any) -> Iterator[Any]:
    """The videos identified on this machine, one at a time: a timeline, or the error that
    stopped one (the next goes on)."""
    from ..errors import VideoError
    from ..video.timeline import identify_video

    for video in videos:
        try:
            yield identify_video(recognizer, video, name=str(video), fps=args.fps,
                                 threshold=threshold, bar=bar, samples=args.samples)
        except VideoError as exc:
            yield exc


def _person_line(person: Any) -> str:
    """One person of a video in ``predict``'s text output: who, when, how sure."""
    from ..reports.display import short_of_certain

    spans = ", ".join(f"{o['start']:.1f}-{o['end']:.1f} s" for o in person.occurrences)
    sure = (f" (match confidence {short_of_certain(person.match_confidence)})"
            if person.match_confidence is not None else "")
    return f"{person.name}{sure}: {person.screen_time:.1f} s on screen, at {spans}"


def cmd_groups(args: argparse.Namespace) -> int:
    from ..albums.groups import AlbumGroups, beside

    path = beside(args.csv)
    book = AlbumGroups.load(path)
    book.csv = Path(args.csv)
    if args.action == "list":
        table = book.summary()
        print(table.to_string(index=False) if len(table) else "no groups")
        if book.last_change():
            print(f"last change (undo takes it back): {book.last_change()}")
        return 0
    if args.action == "show":
        print("\n".join(book.members(args.group)))
        return 0
    if args.action == "merge":
        done = book.merge(args.into, args.other)
    elif args.action == "split":
        done = book.split(args.faces, new_group=not args.none)
    elif args.action == "rename":
        added = None
        if args.name.strip() and not args.label_only:  # the model first: a failure names nobody
            from ..albums.naming import enrol_group

            book.members(args.group)  # a group that is there
            added = enrol_group(book, args.group, args.name)
        done = book.rename(args.group, args.name)
        if added is not None:
            into, label, new = added
            copied = " (your own copy of the built-in model, now in use)" * bool(into.copied_from)
            done += f"; added to {into.title}{copied}" + (
                f" (take them out again: celebmodel people {into.name} remove {label})"
                if new else ""
            )
    else:
        done = book.undo()
    print(f"{done}; wrote {path} and {args.csv}")
    return 0


def _face_line(face: dict) -> str:
    """One face of ``predict``'s text output: who, where, how sure."""
    who = (face.get("name") or face["label"]) if face["known"] else (
        f"unknown (closest: {face.get('nearest_name') or face['nearest']})"
    )
    sure = (f"match confidence {face['match_confidence']:.1%}, "
            if face.get("match_confidence") is not None else "")
    group = f" group {face['group']}" if face.get("group") else ""
    tops = ", ".join(
        f"{t['name']} {t['probability']:.0%}" if t.get("probability") is not None
        else f"{t['name']} {t['similarity']:.0%}"
        for t in face["top_k"]
    )
    return (f"{who} at {face['box']} {sure}similarity {face['similarity']:.0%}{group}"
            + (f" (likely: {tops})" if tops else ""))


def cmd_enroll(args: argparse.Namespace) -> int:
    from ..recognition.people import enroll
    from ..runs.run import load_run

    report = enroll(load_run(args.run), args.name, args.photos)
    for problem in report["skipped"]:
        print(f"skipped {problem['path']}: {problem['reason']}", file=sys.stderr)
    print(
        f"enrolled {args.name} from {report['n_photos']} photo(s) into {args.run} "
        f"in {report['seconds']:.1f} s"
    )
    return 0


def cmd_people(args: argparse.Namespace) -> int:
    from ..recognition import people
    from ..runs.run import load_run

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
    from ..data.sources import fetch_lfw

    scan = fetch_lfw(args.dest, min_faces=args.min_faces)
    print(scan.report())
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from ..reports.run_report import runs_table

    table = runs_table(args.root)
    print(table.to_string(index=False) if len(table) else "no runs")
    return 0


DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # train's defaults
RUN_HELP = "run directory, or lfw-public-figures (the built-in model)"


def _sampling_options(sub: argparse.ArgumentParser) -> None:
    """Photo sampling, shared by split and train."""
    sub.add_argument("--per-class", type=_positive, help="sample N photos per celebrity first")
    sub.add_argument("--seed", type=_at_least(0), default=DEFAULTS["seed"])
    sub.add_argument(
        "--drop-small",
        action="store_true",
        help="drop celebrities with too few photos (with a warning) instead of failing",
    )


def _fps(text: str) -> float | None:
    if text.strip().lower() in ("all", "every"):
        return None
    value = float(text)
    if not 0 < value <= 120:
        raise argparse.ArgumentTypeError(f"{text}: frames per second between 0 and 120, or all")
    return value


def _engine_options(sub: argparse.ArgumentParser) -> None:
    """Where the photos are processed, shared by train and predict."""
    sub.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],  # cluster.engine.ENGINES (kept light here)
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


def _add_split(commands: Any) -> None:
    split = commands.add_parser("split", help="write a per-celebrity 80/10/10 split.csv")
    split.add_argument("data", help="dataset folder: one sub-folder per celebrity")
    split.add_argument("--out", required=True, help="where to write split.csv")
    _sampling_options(split)
    split.set_defaults(func=cmd_split)


def _add_train(commands: Any) -> None:
    from ..backbones import BACKBONES

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
    train.add_argument("--backbone", default=DEFAULTS["backbone"], choices=list(BACKBONES))
    train.add_argument(
        "--weights", default=DEFAULTS["weights"], help="imagenet, none (random) or a file"
    )
    train.add_argument("--recipe", default=DEFAULTS["recipe"], choices=list(RECIPES))
    train.add_argument("--batch-size", type=_positive, default=DEFAULTS["batch_size"])
    train.add_argument("--patience", type=_positive, default=DEFAULTS["patience"])
    train.add_argument("--max-epochs", type=_positive, default=DEFAULTS["max_epochs"])
    train.add_argument("--image-size", type=int, help="input size in pixels (default: backbone's)")
    train.add_argument(
        "--faces",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS["faces"],
        help="detect and align the face first (default on)",
    )
    train.add_argument("--detector", default=DEFAULTS["detector"], choices=DETECTORS)
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
    train.add_argument("--precision", default=DEFAULTS["precision"], choices=PRECISIONS)
    train.add_argument("--exclude", nargs="*", metavar="PATH", help="photos to leave out")
    _sampling_options(train)
    _engine_options(train)
    train.set_defaults(func=cmd_train)


def _add_evaluate(commands: Any) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="metrics of a finished run; --protocol open-set: the built-in model's protocol",
    )
    evaluate.add_argument("run", help="run directory (or lfw-public-figures)")
    evaluate.add_argument(
        "folder", nargs="?", metavar="LFW_FOLDER",
        help="--protocol open-set: the LFW folder (one folder per person) to measure on",
    )
    evaluate.add_argument(
        "--protocol", choices=["open-set"],
        help="open-set identification on LFW: 10 trials, 1,500 people for learning, "
        "1,000 in the gallery; rank-1, DIR at FAR 1%% / 0.1%%, TAR at FAR 0.1%%",
    )
    evaluate.add_argument("--json", metavar="FILE", help="--protocol: also write the figures")
    evaluate.add_argument("--subset", default="test", choices=["test", "val", "train", "all"])
    evaluate.add_argument("--unknown", help="folder of people outside the training set")
    evaluate.set_defaults(func=cmd_evaluate)


def _add_predict(commands: Any) -> None:
    predict = commands.add_parser(
        "predict", help="identify the faces in photos, and who is on screen when in videos"
    )
    predict.add_argument("run", help=RUN_HELP)
    predict.add_argument(
        "images", nargs="+", metavar="PATH",
        help="photos and videos, or folders of them (searched deeply)"
    )
    predict.add_argument("--top-k", type=_positive, default=5)
    unknown = predict.add_mutually_exclusive_group()
    unknown.add_argument(
        "--threshold", type=float, help="unknown above this open-set score (default: calibrated)"
    )
    unknown.add_argument(
        "--min-similarity", type=float,
        help="trained runs: unknown below this similarity to the person's mean face (0..1)",
    )
    unknown.add_argument(
        "--min-confidence", type=float,
        help="unknown below this match confidence (0..1: how rarely strangers score as high)",
    )
    predict.add_argument("--json", action="store_true", help="a JSON array, one object per image")
    predict.add_argument(
        "--csv",
        metavar="FILE",
        help="write one row per face: photo, face, box, label, nearest, match_confidence, "
        "similarity, known, group",
    )
    predict.add_argument(
        "--group", action="store_true", help="number the groups of unknown faces by person"
    )
    predict.add_argument(
        "--fps", type=_fps, default=DEFAULT_FPS, metavar="N",
        help=f"videos: frames looked at per second (default {DEFAULT_FPS:g}; 'all': every frame)",
    )
    predict.add_argument(
        "--vtt", metavar="FILE",
        help="videos: write who is on screen as WebVTT subtitles (several videos: a folder, "
        "one file each)",
    )
    predict.add_argument(
        "--samples", action="store_true",
        help="videos: --json also lists every face of every frame looked at",
    )
    _engine_options(predict)
    predict.set_defaults(func=cmd_predict)


def _add_groups(commands: Any) -> None:
    groups = commands.add_parser(
        "groups",
        help="an album's groups of unknown faces (from predict --csv FILE --group): list, "
        "merge, split, rename, undo",
    )
    groups.add_argument("csv", help="the album CSV; its groups are kept beside it")
    verbs = groups.add_subparsers(dest="action", required=True, metavar="ACTION")
    verbs.add_parser("list", help="every group: its faces, name and photos")
    show = verbs.add_parser("show", help="the faces of a group, as PHOTO#FACE")
    show.add_argument("group", type=int)
    merge = verbs.add_parser("merge", help="every face of group OTHER into group INTO")
    merge.add_argument("into", type=int)
    merge.add_argument("other", type=int)
    split_faces = verbs.add_parser("split", help="take faces out of their group")
    split_faces.add_argument("faces", nargs="*", metavar="PHOTO#FACE", help="as `show` lists them")
    split_faces.add_argument(
        "--none", action="store_true", help="into no group (default: one new group)"
    )
    rename = verbs.add_parser(
        "rename",
        help="name a group (an empty name removes it) and add its faces to the model the album "
        "was grouped with (the built-in model: to your own copy of it)",
    )
    rename.add_argument("group", type=int)
    rename.add_argument("name")
    rename.add_argument(
        "--label-only", action="store_true", help="name the group in the album only"
    )
    verbs.add_parser("undo", help="take back the last merge, split or rename")
    groups.set_defaults(func=cmd_groups)


def _add_enroll(commands: Any) -> None:
    enroll = commands.add_parser(
        "enroll", help="add a celebrity to a face-network run (mbf512, dlib128) from a few photos"
    )
    enroll.add_argument("run", help=RUN_HELP)
    enroll.add_argument("name", help="the celebrity's label, e.g. Ada_Lovelace")
    enroll.add_argument("photos", nargs="+", metavar="PHOTO", help="photos or a folder of them")
    enroll.set_defaults(func=cmd_enroll)


def _add_roster(commands: Any) -> None:
    roster = commands.add_parser(
        "people", help="who a run knows: list, add (face-network runs), rename, remove"
    )
    roster.add_argument("run", help=RUN_HELP)
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


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="an HTTP API for one run: POST /identify, GET /people /health /version, docs at /docs",
        description="Serve one run as an HTTP API (FastAPI + uvicorn) until Ctrl-C. "
        "POST /identify takes a photo (multipart field 'file') and answers the JSON of "
        "predict --json; 400 for an unusable photo, 401 without the API key, 413 over the "
        "size limit. The API docs are at /docs.",
    )
    serve.add_argument("run", help=RUN_HELP)
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


def _add_export(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="the run's network for use elsewhere (Keras, SavedModel, TFLite, TF.js)",
        description="Write the run's network (aligned face in, embedding and class "
        "probabilities out) into a new folder DIR with labels.json, calibration.json "
        "(threshold), centroids.npy and a README.md giving the input spec and a Python "
        "example. tfjs needs the optional tensorflowjs package.",
    )
    export.add_argument("run", help=RUN_HELP)
    export.add_argument(
        "dir", metavar="DIR", help="new folder to write (must not exist, or be empty)"
    )
    export.add_argument(
        "--format",
        default="keras",
        choices=["keras", "savedmodel", "tflite", "tfjs"],  # export.FORMATS (kept light here)
    )
    export.set_defaults(func=cmd_export)


def _add_fetch(commands: Any) -> None:
    fetch = commands.add_parser("fetch-lfw", help="download Labeled Faces in the Wild (online)")
    fetch.add_argument("dest", help="folder to write the dataset into")
    fetch.add_argument(
        "--min-faces", type=_positive, default=60,
        help="keep people with at least this many photos (default 60: LFW's 8 most "
        "photographed; 1: everyone, for build-lfw-model)",
    )
    fetch.set_defaults(func=cmd_fetch_lfw)


def _add_build_model(commands: Any) -> None:
    from ..faces.network import NETWORKS

    build_model = commands.add_parser(
        "build-lfw-model",
        help="build the built-in public-figures model from an LFW folder",
        description="Build the built-in model (lfw-public-figures) from a folder in the "
        "layout of LFW's official archive (<Person>/<Person>_0001.jpg ...): faces found and "
        "embedded (cached as training caches them), the scoring calibrated, the open-set "
        "protocol measured. Only names and numbers are written; no photo.",
    )
    build_model.add_argument("lfw", metavar="LFW_FOLDER")
    build_model.add_argument(
        "--out", metavar="DIR", help="write here instead of the package's built-in folder"
    )
    build_model.add_argument(
        "--missing-ok", nargs="+", metavar="PERSON",
        help="people of LFW's list known to be absent from this copy (recorded)",
    )
    build_model.add_argument(
        "--names", metavar="FILE",
        help="the list of people and photo counts to check the folder against, in the format "
        "of LFW's lfw-names.txt (default: LFW's own list)",
    )
    build_model.add_argument(
        "--network", choices=list(NETWORKS),
        help="the face network its gallery is built on (default: the shipped model's)",
    )
    build_model.add_argument(
        "--strangers", metavar="DIR",
        help="photos of people who are not in LFW, from other sources (one folder per person): "
        "they set the match confidence and the presets (default: LFW's people left out in turn)",
    )
    build_model.add_argument(
        "--known-elsewhere", metavar="DIR",
        help="photos of LFW people from other sources (one folder per person, named as in LFW): "
        "what each preset names of them, right and wrong, is recorded and shown",
    )
    build_model.set_defaults(func=cmd_build_lfw_model)


def _add_copy(commands: Any) -> None:
    copy = commands.add_parser(
        "copy", help="a copy of a run you can change (Make my own copy of lfw-public-figures)"
    )
    copy.add_argument("run", help="run directory (or lfw-public-figures)")
    copy.add_argument("--name", help="what to call the copy (default: 'My <name>')")
    copy.set_defaults(func=cmd_copy)


def _add_runs(commands: Any) -> None:
    runs = commands.add_parser("runs", help="list runs and their state")
    runs.add_argument("--root", help="runs folder (default $CELEBMODEL_RUNS or runs/)")
    runs.set_defaults(func=cmd_runs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="celebmodel",
        description="Celebrity face recognition: split, train, evaluate, predict.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_split,
        _add_train,
        _add_evaluate,
        _add_predict,
        _add_groups,
        _add_enroll,
        _add_roster,
        _add_serve,
        _add_export,
        _add_fetch,
        _add_build_model,
        _add_copy,
        _add_runs,
    ):
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors the user can fix are one line on stderr, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (Cancelled, KeyboardInterrupt) as exc:
        print(f"cancelled: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped early (`| head`): nothing went wrong here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
    except (CelebmodelError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
