"""The command line as a user runs it: ``python -m celebmodel ...`` in a subprocess.

Each subprocess gets its own runs and data folders under pytest's temporary folder. Commands
that load a model import TensorFlow (about ten seconds each), so there are few of them.
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

from celebmodel.cli import build_parser


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CELEBMODEL_RUNS"] = str(tmp_path / "runs")
    env["CELEBMODEL_DATA"] = str(tmp_path / "appdata")
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "celebmodel", *map(str, args)]


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def subcommands() -> list[str]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a.choices, dict)]
    return list(action.choices)


def test_help_on_every_command(cli_env, tmp_path):
    names = subcommands()
    assert {"split", "train", "evaluate", "predict", "fetch-lfw", "runs"} <= set(names)
    # --help never imports TensorFlow, so all of them together take a few seconds.
    procs = {
        name: subprocess.Popen(
            command(*([name] if name else []), "--help"),
            env=cli_env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ["", *names]
    }
    outputs = {name: proc.communicate(timeout=120) for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, outputs[name][1])
        assert outputs[name][0].startswith("usage: celebmodel"), name
    assert all(name in outputs[""][0] for name in names)
    train_help = outputs["train"][0]
    for option in (
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
    ):
        assert option in train_help, option
    for option in ("--subset",):
        assert option in outputs["evaluate"][0]
    for option in ("--top-k", "--json"):
        assert option in outputs["predict"][0]


def test_split_writes_48_6_6_from_60_photos(cli_env, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=60, size=32)
    out = tmp_path / "split.csv"
    result = cli(cli_env, tmp_path, "split", data, "--out", out)
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
    assert cli(cli_env, tmp_path, *args, "--out", again).returncode == 0
    sampled = pd.read_csv(again)
    assert sampled.groupby("subset").size().to_dict() == {"test": 3, "train": 24, "val": 3}
    assert cli(cli_env, tmp_path, *args, "--out", out).returncode == 0
    pd.testing.assert_frame_equal(pd.read_csv(out), sampled)


@pytest.mark.parametrize(
    "args",
    [
        ["train"],  # no dataset
        ["train", "data", "--batch-size", "0"],
        ["train", "data", "--backbone", "alexnet"],
        ["train", "data", "--recipe", "fancy"],
    ],
    ids=["missing-data", "batch-size-0", "unknown-backbone", "unknown-recipe"],
)
def test_train_with_bad_arguments_exits_2(cli_env, tmp_path, args):
    result = cli(cli_env, tmp_path, *args)
    assert result.returncode == 2
    assert "usage:" in result.stderr and "error:" in result.stderr
    assert not (tmp_path / "runs").exists()  # refused before any run directory is made


@pytest.fixture(scope="module")
def heavy(cnn_run, tiny_dataset, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The commands that import TensorFlow, started together to share the start-up wait.

    Each works on its own copy of the session's finished run, so nothing else is changed.
    """
    base = tmp_path_factory.mktemp("cli")
    env = dict(os.environ)
    env["CELEBMODEL_RUNS"] = str(base / "runs")
    env["CELEBMODEL_DATA"] = str(base / "appdata")
    ns = SimpleNamespace(base=base, env=env)
    ns.eval_run = Path(shutil.copytree(cnn_run.path, base / "runs" / "20250101-000000-eval"))
    ns.predict_run = Path(shutil.copytree(cnn_run.path, base / "runs" / "20250102-000000-pred"))
    for stale in [*ns.eval_run.glob("metrics_*.json"), *ns.eval_run.glob("predictions_*.csv")]:
        stale.unlink()
    ns.photo = base / "img.jpg"
    shutil.copy(sorted((tiny_dataset / "Celebrity_B").glob("*.jpg"))[0], ns.photo)
    ns.bad = base / "bad.txt"
    ns.bad.write_text("not a photo")
    ns.missing_photo = base / "missing.jpg"
    ns.missing_data = base / "no_such_photos"
    ns.train_run = base / "failed-run"
    small = ("--weights", "none", "--no-faces", "--image-size", "32")
    commands = {
        "evaluate": ("evaluate", ns.eval_run, "--subset", "all"),
        "predict": ("predict", ns.predict_run, ns.photo, ns.bad, "--json", "--top-k", "2"),
        "predict_bad": ("predict", ns.predict_run, ns.bad, ns.missing_photo),
        "train_missing": ("train", ns.missing_data, "--run-dir", ns.train_run, *small),
    }
    procs = {
        name: subprocess.Popen(
            command(*args),
            env=env,
            cwd=base,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    }
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        setattr(ns, name, subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return ns


def test_train_on_a_missing_dataset_exits_1_naming_it(heavy):
    result = heavy.train_missing
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]  # the CLI's own one-line message comes last
    assert last.startswith("error:") and str(heavy.missing_data) in last
    assert not (heavy.train_run / "model.keras").exists()
    if (heavy.train_run / "status.json").exists():
        assert json.loads((heavy.train_run / "status.json").read_text())["state"] == "failed"


def test_evaluate_all_subsets(heavy):
    result, run = heavy.evaluate, heavy.eval_run
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


def test_predict_json(heavy):
    result = heavy.predict
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert isinstance(answers, list) and len(answers) == 2
    assert all(set(answer) >= {"image", "faces", "error"} for answer in answers)
    good, broken = answers
    labels = json.loads((heavy.predict_run / "labels.json").read_text())
    assert good["image"] == str(heavy.photo) and good["error"] is None
    (face,) = good["faces"]  # a --no-faces run: the whole photo is one face
    assert {"box", "label", "probability", "top_k"} <= set(face)
    assert face["box"] == [0, 0, 48, 48]
    assert face["label"] in [*labels, "unknown"] and 0 < face["probability"] <= 1
    assert len(face["top_k"]) == 2 and face["top_k"][0]["probability"] == face["probability"]
    assert face["top_k"][0]["probability"] >= face["top_k"][1]["probability"]
    assert {t["label"] for t in face["top_k"]} <= set(labels)
    assert broken["image"] == str(heavy.bad) and broken["faces"] == []
    assert "bad.txt" in broken["error"]


def test_predict_with_only_unreadable_images_fails(heavy):
    result = heavy.predict_bad
    assert result.returncode == 1, result.stderr
    assert "bad.txt" in result.stdout and "missing.jpg" in result.stdout


def test_runs_lists_the_runs(heavy):
    result = cli(heavy.env, heavy.base, "runs")  # $CELEBMODEL_RUNS holds the two copies
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "finished" in result.stdout
    names = [line.split()[0] for line in lines[1:]]
    assert names == [heavy.predict_run.name, heavy.eval_run.name]  # newest first
    empty = cli(heavy.env, heavy.base, "runs", "--root", heavy.base / "nothing")
    assert empty.returncode == 0 and "no runs" in empty.stdout


def test_train_into_an_unusable_runs_folder_exits_1_naming_it(cli_env, tmp_path):
    blocked = tmp_path / "runs-is-a-file"
    blocked.write_text("not a folder")
    dataset = make_dataset(tmp_path / "dataset", per_class=3, size=32)
    result = cli({**cli_env, "CELEBMODEL_RUNS": str(blocked)}, tmp_path, "train", dataset)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {blocked}: cannot be the runs folder"), last
    assert blocked.read_text() == "not a folder"
