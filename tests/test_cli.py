"""The command line: every command called in-process through ``main([...])``, and once each as
a real ``python -m celebmodel`` process (a smoke test, marked slow).

Exit codes: 0 success, 1 the work failed (one ``error:`` line, no traceback), 2 bad usage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import METRIC_KEYS, make_dataset

from celebmodel.interfaces.cli import build_parser, main


def run_cli(capsys: pytest.CaptureFixture, *args: object) -> SimpleNamespace:
    """``celebmodel ARGS`` in this process: exit code, stdout and stderr."""
    capsys.readouterr()
    try:
        code = main([str(arg) for arg in args])
    except SystemExit as exc:  # argparse: --help and usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def subcommands() -> list[str]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a.choices, dict)]
    return list(action.choices)


def test_help_on_every_command(capsys):
    names = subcommands()
    assert {"split", "train", "evaluate", "predict", "enroll", "fetch-lfw", "runs"} <= set(names)
    outputs = {name: run_cli(capsys, *([name] if name else []), "--help") for name in ["", *names]}
    for name, result in outputs.items():
        assert result.returncode == 0, (name, result.stderr)
        assert result.stdout.startswith("usage: celebmodel"), name
    assert all(name in outputs[""].stdout for name in names)
    train_help = outputs["train"].stdout
    for option in (
        "--config",
        "--run-dir",
        "--backbone",
        "--weights",
        "--recipe",
        "--per-class",
        "--seed",
        "--batch-size",
        "--patience",
        "--max-epochs",
        "--image-size",
        "--faces, --no-faces",
        "--fine-tune, --no-fine-tune",
    ):
        assert option in train_help, option
    assert "--subset" in outputs["evaluate"].stdout
    for option in ("--top-k", "--json"):
        assert option in outputs["predict"].stdout
    for option in ("--host", "--port", "--api-key", "--max-upload-mb", "X-API-Key"):
        assert option in outputs["serve"].stdout, option
    assert "{keras,savedmodel,tflite,tfjs}" in outputs["export"].stdout


def test_split_writes_48_6_6_from_60_photos(capsys, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=60, size=32)
    out = tmp_path / "split.csv"
    result = run_cli(capsys, "split", data, "--out", out)
    assert result.returncode == 0, result.stderr
    split = pd.read_csv(out)
    assert list(split.columns) == ["path", "label", "subset"]
    counts = split.groupby(["label", "subset"]).size().unstack()
    assert counts.to_dict("index") == {
        label: {"test": 6, "train": 48, "val": 6} for label in counts.index
    }
    assert len(counts) == 3 and not split["path"].duplicated().any()
    assert all((data / p).is_file() for p in split["path"])  # paths relative to the dataset
    assert f"wrote {out}" in result.stdout
    # --per-class samples first (seeded): 10 photos -> 8/1/1; the same seed, the same split.
    again = tmp_path / "again.csv"
    args = ("split", data, "--per-class", "10", "--seed", "3")
    assert run_cli(capsys, *args, "--out", again).returncode == 0
    sampled = pd.read_csv(again)
    assert sampled.groupby("subset").size().to_dict() == {"test": 3, "train": 24, "val": 3}
    assert run_cli(capsys, *args, "--out", out).returncode == 0
    pd.testing.assert_frame_equal(pd.read_csv(out), sampled)


@pytest.mark.parametrize(
    "args",
    [
        ["train"],  # no dataset
        ["train", "data", "--batch-size", "0"],
        ["train", "data", "--backbone", "alexnet"],
        ["train", "data", "--recipe", "fancy"],
        ["train", "data", "--seed", "-1"],
        ["split", "data", "--out", "x.csv", "--seed", "-1"],
    ],
    ids=["missing-data", "batch-size-0", "unknown-backbone", "unknown-recipe", "seed", "split"],
)
def test_bad_arguments_exit_2_before_any_work(capsys, tmp_path, monkeypatch, args):
    """A negative seed used to reach ``make_split`` and end in a ValueError traceback."""
    monkeypatch.chdir(tmp_path)
    result = run_cli(capsys, *args)
    if args == ["train"]:  # the dataset is optional for argparse (--config may replace it)
        assert result.returncode == 1
        assert result.stderr.strip() == "error: train: give a dataset folder (or --config FILE)"
    else:
        assert result.returncode == 2
        assert "usage:" in result.stderr and "error:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x.csv").exists()


def test_train_on_a_missing_dataset_exits_1_naming_it(capsys, tmp_path):
    missing, run_dir = tmp_path / "no_such_photos", tmp_path / "failed-run"
    result = run_cli(capsys, "train", missing, "--run-dir", run_dir, "--weights", "none")
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]  # the CLI's own one-line message comes last
    assert last.startswith("error:") and str(missing) in last
    assert not (run_dir / "model.keras").exists()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"


def test_train_from_a_config_file_and_never_from_both(capsys, tmp_path):
    from celebmodel.config import TrainConfig

    config = tmp_path / "config.json"
    TrainConfig(data_dir=str(tmp_path / "gone"), backbone="vgg16", weights="none").save(config)
    result = run_cli(capsys, "train", "--config", config, "--run-dir", tmp_path / "run")
    assert result.returncode == 1 and f"{tmp_path / 'gone'}: dataset folder does not exist" in (
        result.stderr
    )
    both = run_cli(capsys, "train", tmp_path, "--config", config)
    assert both.returncode == 1 and "not both" in both.stderr
    config.write_text('{"data_dir": "x", "batch": 8}')
    bad = run_cli(capsys, "train", "--config", config)
    assert bad.returncode == 1 and "unknown setting(s) batch" in bad.stderr


@pytest.fixture(scope="module")
def runs_copy(cnn_run, tiny_dataset, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Two copies of the session's finished run and a few photos, good and bad."""
    base = tmp_path_factory.mktemp("cli")
    ns = SimpleNamespace(base=base, runs=base / "runs")
    ns.eval_run = Path(shutil.copytree(cnn_run.path, ns.runs / "20250101-000000-eval"))
    ns.predict_run = Path(shutil.copytree(cnn_run.path, ns.runs / "20250102-000000-pred"))
    for stale in [*ns.eval_run.glob("metrics_*.json"), *ns.eval_run.glob("predictions_*.csv")]:
        stale.unlink()
    ns.photo = base / "img.jpg"
    shutil.copy(sorted((tiny_dataset / "Celebrity_B").glob("*.jpg"))[0], ns.photo)
    ns.bad = base / "bad.txt"
    ns.bad.write_text("not a photo")
    ns.missing_photo = base / "missing.jpg"
    return ns


def test_evaluate_all_subsets(capsys, runs_copy):
    run = runs_copy.eval_run
    result = run_cli(capsys, "evaluate", run, "--subset", "all")
    assert result.returncode == 0, result.stderr
    labels = json.loads((run / "labels.json").read_text())
    for subset in ("train", "val", "test"):
        metrics = json.loads((run / f"metrics_{subset}.json").read_text())
        assert set(metrics) >= METRIC_KEYS and metrics["subset"] == subset
        assert f"[{subset}] n={metrics['n']} accuracy={metrics['accuracy']:.3f}" in result.stdout
        predictions = pd.read_csv(run / f"predictions_{subset}.csv")
        assert len(predictions) == metrics["n"]
        assert {f"p_{label}" for label in labels} <= set(predictions.columns)
    assert "overfitting" in result.stdout.lower()


def test_predict_json(capsys, runs_copy):
    args = ("predict", runs_copy.predict_run, runs_copy.photo, runs_copy.bad, "--json")
    result = run_cli(capsys, *args, "--top-k", "2")
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert isinstance(answers, list) and len(answers) == 2
    assert all(set(answer) >= {"image", "faces", "error"} for answer in answers)
    good, broken = answers
    labels = json.loads((runs_copy.predict_run / "labels.json").read_text())
    assert good["image"] == str(runs_copy.photo) and good["error"] is None
    (face,) = good["faces"]  # a --no-faces run: the whole photo is one face
    assert {"box", "label", "probability", "top_k"} <= set(face)
    assert face["box"] == [0, 0, 48, 48]
    assert face["label"] in [*labels, "unknown"] and 0 < face["probability"] <= 1
    assert len(face["top_k"]) == 2 and face["top_k"][0]["probability"] == face["probability"]
    assert face["top_k"][0]["probability"] >= face["top_k"][1]["probability"]
    assert {t["label"] for t in face["top_k"]} <= set(labels)
    assert broken["image"] == str(runs_copy.bad) and broken["faces"] == []
    assert "bad.txt" in broken["error"]


def test_predict_with_only_unreadable_images_fails(capsys, runs_copy):
    result = run_cli(
        capsys, "predict", runs_copy.predict_run, runs_copy.bad, runs_copy.missing_photo
    )
    assert result.returncode == 1, result.stderr
    assert "bad.txt" in result.stdout and "missing.jpg" in result.stdout


def test_runs_lists_the_runs(capsys, runs_copy):
    result = run_cli(capsys, "runs", "--root", runs_copy.runs)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "finished" in result.stdout
    names = [line.split()[0] for line in lines[1:]]
    assert names == [runs_copy.predict_run.name, runs_copy.eval_run.name]  # newest first
    empty = run_cli(capsys, "runs", "--root", runs_copy.base / "nothing")
    assert empty.returncode == 0 and "no runs" in empty.stdout


def test_runs_and_split_never_import_tensorflow(runs_copy, tmp_path):
    """``runs`` and ``split`` need no network: they must not pay TensorFlow's seconds of
    import (their speed is measured by ``bench/cli_speed.py``)."""
    dataset = make_dataset(tmp_path / "dataset", per_class=3, size=16)
    script = (
        "import sys\n"
        "from celebmodel.interfaces.cli import main\n"
        f"main(['runs', '--root', {str(runs_copy.runs)!r}])\n"
        f"main(['split', {str(dataset)!r}, '--out', {str(tmp_path / 'split.csv')!r}])\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'dlib') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert "finished" in done.stdout and (tmp_path / "split.csv").is_file()
    assert done.stdout.splitlines()[-1] == "[]", done.stdout


def test_a_reader_that_stops_early_is_not_an_error(runs_copy):
    """``celebmodel runs | head``: the reader closes the pipe before the listing is written;
    the command ends quietly (it printed "error: [Errno 32] Broken pipe")."""
    process = subprocess.Popen(
        [sys.executable, "-m", "celebmodel", "runs", "--root", str(runs_copy.runs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # before the command writes anything
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0 and "Broken pipe" not in stderr, stderr


def test_train_into_an_unusable_runs_folder_exits_1_naming_it(capsys, tmp_path, monkeypatch):
    blocked = tmp_path / "runs-is-a-file"
    blocked.write_text("not a folder")
    dataset = make_dataset(tmp_path / "dataset", per_class=3, size=32)
    monkeypatch.setenv("CELEBMODEL_RUNS", str(blocked))
    result = run_cli(capsys, "train", dataset)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {blocked}: cannot be the runs folder"), last
    assert blocked.read_text() == "not a folder"


def test_a_cancelled_command_exits_130(capsys, monkeypatch):
    """``Cancelled`` is caught by its type (it used to be recognised by its class name)."""
    from celebmodel.errors import Cancelled
    from celebmodel.interfaces import cli

    def cancelled(args):
        raise Cancelled("stopped by signal SIGTERM")

    monkeypatch.setattr(cli, "cmd_runs", cancelled)
    result = run_cli(capsys, "runs")
    assert result.returncode == 130 and result.stderr == "cancelled: stopped by signal SIGTERM\n"


@pytest.mark.slow
def test_every_command_runs_as_a_real_process(runs_copy, tiny_dataset, tmp_path):
    """One smoke test per command as ``python -m celebmodel``, started together to share the
    start-up wait; the behaviour itself is checked in-process above."""
    env = {
        **os.environ,
        "CELEBMODEL_RUNS": str(runs_copy.runs),
        "CELEBMODEL_DATA": str(tmp_path / "appdata"),
    }
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    twin = tmp_path / "twin.jpg"
    shutil.copy(runs_copy.photo, twin)
    enrol_run = Path(shutil.copytree(runs_copy.predict_run, tmp_path / "enrol-run"))
    commands = {
        "split": (("split", tiny_dataset, "--out", tmp_path / "split.csv"), 0, "wrote"),
        "train": (("train", tmp_path / "nowhere"), 1, "dataset folder does not exist"),
        "evaluate": (("evaluate", runs_copy.predict_run), 0, "[test] n="),
        "predict": (("predict", runs_copy.predict_run, runs_copy.photo), 0, "img.jpg:"),
        "enroll": (("enroll", enrol_run, "Twin", twin), 1, "face-embedding run"),
        "fetch-lfw": (("fetch-lfw", not_a_folder), 1, "not a folder"),
        "runs": (("runs",), 0, "finished"),
        "people": (("people", runs_copy.predict_run, "list"), 0, "Celebrity_A"),
        "serve": (("serve", tmp_path / "nowhere"), 1, "no such run directory"),
        "export": (("export", runs_copy.predict_run, tmp_path / "exported"), 0, "wrote"),
        "groups": (("groups", tmp_path / "none.csv", "list"), 1, "no groups yet"),
        "build-lfw-model": (("build-lfw-model", not_a_folder), 1, "not a folder"),
        "copy": (("copy", runs_copy.predict_run, "--name", "Mine"), 0, "copied"),
    }
    assert set(commands) == set(subcommands())
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "celebmodel", *map(str, args)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _, _) in commands.items()
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        _, code, phrase = commands[name]
        assert proc.returncode == code, (name, err[-2000:])
        assert phrase in out + err, (name, out[-500:], err[-500:])
        assert "Traceback" not in err, name


def test_an_unknown_face_line_names_its_closest_person_as_people_read_it():
    """The text output's closest person is the display name ("Catherine Donkers"), as on the
    page, not the folder label ("Catherine_Donkers")."""
    from celebmodel.interfaces.cli import _face_line

    face = {
        "known": False, "label": "unknown", "nearest": "Catherine_Donkers",
        "nearest_name": "Catherine Donkers", "box": [1, 2, 3, 4], "match_confidence": 0.69,
        "similarity": 0.94, "top_k": [],
    }
    assert _face_line(face) == (
        "unknown (closest: Catherine Donkers) at [1, 2, 3, 4] match confidence 69.0%, "
        "similarity 94%"
    )


def test_a_known_face_line_reads_as_the_page_does():
    """Its display name, not the folder label; the likely people in the order of their numbers,
    each a percentage like the similarity."""
    from celebmodel.interfaces.cli import _face_line

    face = {
        "known": True, "label": "Tony_Blair", "name": "Tony Blair", "nearest": "Tony_Blair",
        "box": [1, 2, 3, 4], "match_confidence": 0.991, "similarity": 0.71,
        "top_k": [{"label": "Tony_Blair", "name": "Tony Blair", "similarity": 0.71},
                  {"label": "Tony_Blair_2", "name": "Anthony Blair", "similarity": 0.5}],
    }
    assert _face_line(face) == (
        "Tony Blair at [1, 2, 3, 4] match confidence 99.1%, similarity 71% "
        "(likely: Tony Blair 71%, Anthony Blair 50%)"
    )
