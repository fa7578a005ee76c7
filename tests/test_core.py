"""Tests for the core: settings, backbones, the model, training runs, evaluation and runs.

Everything trains at 32 px with random weights (``weights="none"``) on generated photos, so
nothing needs the network. The session fixtures ``cnn_run`` and ``tiny_dataset`` come from
``conftest.py``; the tests that train their own run keep it to a few epochs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import METRIC_KEYS, make_dataset
from PIL import Image

from celebmodel.config import RECIPES, TrainConfig
from celebmodel.errors import ConfigError

HISTORY_COLUMNS = {
    "epoch",
    "phase",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "seconds",
}
SMALL = {"weights": "none", "image_size": 32, "faces": False}  # every training here


def small_config(data_dir: Path, **settings) -> TrainConfig:
    return TrainConfig(data_dir=str(data_dir), **{**SMALL, **settings})


def noise_dataset(root: Path, per_class: int = 6, size: int = 32, seed: int = 1) -> Path:
    """Three folders of pure noise: labels carry no information, so val loss cannot improve."""
    rng = np.random.default_rng(seed)
    for label in ("Noise_A", "Noise_B", "Noise_C"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"n{i}.png")
    return root


def partial_models(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob(".model*.keras"))


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 photos per celebrity at 32 px: 2/1/1 each, so an epoch is a single batch of 6."""
    return make_dataset(tmp_path_factory.mktemp("small") / "dataset", per_class=4, size=32)


# --------------------------------------------------------------------------------------------
# config


def test_config_defaults_are_the_original_recipe():
    config = TrainConfig(data_dir="photos")
    assert config.batch_size == 8
    assert config.patience == 5
    assert config.backbone == "vgg16"
    assert config.weights == "imagenet"
    assert config.recipe == "improved"  # the default is the improved recipe ...
    classic = RECIPES["classic"]  # ... and "classic" is the original one
    assert classic.pooling == "flatten"
    assert classic.base_trainable is True
    assert classic.two_phase is False
    assert classic.augment is False
    assert classic.dropout == 0.0
    improved = RECIPES["improved"]
    assert (improved.pooling, improved.two_phase, improved.augment) == ("avg", True, True)
    assert improved.base_trainable is False and improved.dropout > 0
    assert improved.fine_tune_learning_rate < improved.learning_rate


def test_from_dict_names_unknown_and_wrong_typed_keys():
    with pytest.raises(ConfigError, match="bogus_setting"):
        TrainConfig.from_dict({"data_dir": "x", "bogus_setting": 1})
    with pytest.raises(ConfigError, match="batch_size") as err:
        TrainConfig.from_dict({"data_dir": "x", "batch_size": "8"})
    assert "'8'" in str(err.value)
    with pytest.raises(ConfigError, match="patience"):  # a bool is not an int here
        TrainConfig.from_dict({"data_dir": "x", "patience": True})
    with pytest.raises(ConfigError, match="faces"):
        TrainConfig.from_dict({"data_dir": "x", "faces": "yes"})
    with pytest.raises(ConfigError, match="exclude"):
        TrainConfig.from_dict({"data_dir": "x", "exclude": "a.jpg"})
    with pytest.raises(ConfigError, match="data_dir"):
        TrainConfig.from_dict({"backbone": "vgg16"})
    with pytest.raises(ConfigError, match="backbone"):
        TrainConfig.from_dict({"data_dir": "x", "backbone": "alexnet"})
    # The right types pass: an int where a float is expected, None where None is allowed.
    config = TrainConfig.from_dict({"data_dir": "x", "learning_rate": 1, "per_class": None})
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)


def test_resolved_fills_image_size_and_recipe_values(tmp_path):
    config = TrainConfig(data_dir=str(tmp_path / "a" / ".." / "photos"), recipe="classic")
    resolved = config.resolved()
    assert resolved.data_dir == str((tmp_path / "photos").resolve())
    assert Path(resolved.data_dir).is_absolute()
    assert resolved.image_size == 224
    classic = RECIPES["classic"]
    assert resolved.augment is classic.augment
    assert resolved.learning_rate == classic.learning_rate
    assert resolved.fine_tune_learning_rate == classic.fine_tune_learning_rate
    assert resolved.dropout == classic.dropout
    improved = TrainConfig(data_dir="x", image_size=64, augment=False, dropout=0.5).resolved()
    assert improved.image_size == 64  # given values win over the recipe's
    assert improved.augment is False and improved.dropout == 0.5
    assert improved.learning_rate == RECIPES["improved"].learning_rate
    assert TrainConfig(data_dir="x", backbone="dlib128").resolved().image_size == 150
    with pytest.raises(ConfigError, match="image_size"):
        TrainConfig(data_dir="x", image_size=16).resolved()


def test_config_json_round_trip(tmp_path):
    config = TrainConfig(
        data_dir=str(tmp_path),
        backbone="resnet50",
        per_class=60,
        seed=3,
        exclude=("A/1.jpg", "B/2.jpg"),
    ).resolved()
    path = tmp_path / "config.json"
    config.save(path, extra={"dataset_fingerprint": "abc"})
    saved = json.loads(path.read_text())
    assert saved["run"] == {"dataset_fingerprint": "abc"}
    assert saved["exclude"] == ["A/1.jpg", "B/2.jpg"]
    assert TrainConfig.load(path) == config
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="config.json"):
        TrainConfig.load(path)


# --------------------------------------------------------------------------------------------
# backbones


CNN_BACKBONES = ["vgg16", "resnet50", "mobilenet_v2", "efficientnet_b0"]


def test_backbone_table_lists_the_required_cnns():
    from celebmodel.backbones import BACKBONES

    assert set(CNN_BACKBONES) <= set(BACKBONES)
    assert sorted(n for n, b in BACKBONES.items() if b.kind == "cnn") == sorted(CNN_BACKBONES)


@pytest.mark.parametrize("name", CNN_BACKBONES)
def test_backbone_builds_without_weights(name):
    from celebmodel.backbones import BACKBONES

    backbone = BACKBONES[name]
    base = backbone.build("none", 32)  # 32 px is the smallest size every application accepts
    assert base.input_shape == (None, 32, 32, 3)
    assert base.get_layer(backbone.fine_tune_from) is not None  # phase 2 starts here
    assert backbone.weights_file and backbone.input_size == 224
    pixels = np.full((1, 32, 32, 3), 128.0, np.float32)
    features = base(backbone.preprocess(pixels))
    assert features.shape[0] == 1 and np.all(np.isfinite(np.asarray(features)))


def test_embedding_row_is_the_face_network_with_a_unit_length_embedding_and_a_head():
    import keras

    from celebmodel.learning.model import build_model, head_model

    config = TrainConfig(data_dir="x", backbone="dlib128").resolved()
    model, base = build_model(config, 3)
    assert base.name == "dlib_face_resnet" and model.get_layer("dlib_face_resnet") is base
    assert model.input.shape == (None, 150, 150, 3)  # an aligned chip goes in
    assert isinstance(model.get_layer("embedding"), keras.layers.UnitNormalization)
    assert isinstance(model.get_layer("classifier"), keras.layers.Dense)
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in base.layers) == 29
    head = head_model(model)  # phase 1: the head alone, on cached embeddings
    assert head.input.shape == (None, 128)
    assert head.get_layer("classifier") is model.get_layer("classifier")


def test_imagenet_weights_offline_explain_how_to_get_them(monkeypatch, tmp_path):
    from keras.src.utils import file_utils

    from celebmodel.backbones import BACKBONES, keras_cache
    from celebmodel.errors import WeightsError

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    calls = []

    def offline(fname, origin=None, **kwargs):  # what Keras raises on a failed download
        calls.append(fname)
        raise Exception(
            f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name "
            "resolution"
        )

    monkeypatch.setattr(file_utils, "get_file", offline)
    vgg16 = BACKBONES["vgg16"]
    with pytest.raises(WeightsError) as err:
        vgg16.build("imagenet", 32)
    assert calls == [vgg16.weights_file]  # it really tried Keras's own download
    message = str(err.value)
    assert vgg16.weights_file in message
    assert str(keras_cache()) in message and str(tmp_path / "keras" / "models") in message
    assert "--weights PATH" in message
    assert "Temporary failure in name resolution" in message
    assert not vgg16.imagenet_cached()


def test_weights_path_must_exist_and_fit(tmp_path):
    from celebmodel.backbones import BACKBONES
    from celebmodel.errors import WeightsError

    missing = tmp_path / "nowhere.h5"
    with pytest.raises(WeightsError, match=f"--weights {missing}: no such file"):
        BACKBONES["vgg16"].build(str(missing), 32)
    junk = tmp_path / "junk.weights.h5"
    junk.write_text("not weights")
    with pytest.raises(WeightsError, match="cannot load into vgg16"):
        BACKBONES["vgg16"].build(str(junk), 32)


# --------------------------------------------------------------------------------------------
# the model


def test_build_model_classic_is_vgg16_flatten_softmax():
    import keras

    from celebmodel.learning.model import build_model

    config = small_config(Path("x"), recipe="classic").resolved()
    model, base = build_model(config, 5)
    assert base.name == "vgg16" and model.get_layer("vgg16") is base
    assert isinstance(model.get_layer("embedding"), keras.layers.Flatten)
    head = model.get_layer("classifier")
    assert isinstance(head, keras.layers.Dense) and head.units == 5
    assert head.activation is keras.activations.softmax
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert base.trainable and all(layer.trainable for layer in base.layers)  # whole network
    assert model.output.shape == (None, 5)
    assert len(model.trainable_weights) == 13 * 2 + 2  # 13 VGG16 convolutions + the head


def test_build_model_improved_pools_and_drops_out():
    import keras

    from celebmodel.learning.model import build_model

    config = small_config(Path("x")).resolved()
    model, base = build_model(config, 4)
    assert isinstance(model.get_layer("embedding"), keras.layers.GlobalAveragePooling2D)
    dropout = model.get_layer("dropout")
    assert isinstance(dropout, keras.layers.Dropout) and dropout.rate == RECIPES["improved"].dropout
    assert not base.trainable  # phase 1: the base is frozen, only the head learns
    assert [w.name for w in model.trainable_weights] == ["kernel", "bias"]
    assert model.get_layer("classifier").units == 4


def test_improved_fit_unfreezes_block5_in_phase_two(cnn_run):
    """The improved run (cnn_run) ends phase 2 with only block5 and the head trainable."""
    model = cnn_run.load_model()  # trainable flags are part of the saved model
    base = model.get_layer("vgg16")
    names = [layer.name for layer in base.layers]
    start = names.index("block5_conv1")
    assert start > 10
    assert base.trainable
    assert not any(layer.trainable for layer in base.layers[1:start])
    assert all(layer.trainable for layer in base.layers[start:])
    trainable = {w.path.split("/")[-2] for w in model.trainable_weights}
    assert trainable == {"block5_conv1", "block5_conv2", "block5_conv3", "classifier"}
    phases = cnn_run.history()["phase"]
    assert phases.iloc[0] == "head" and phases.iloc[-1] == "fine-tune"


# --------------------------------------------------------------------------------------------
# a whole training run


def test_training_writes_a_complete_run_directory(cnn_run, tiny_dataset):
    import keras

    from celebmodel.data.dataset import read_split, scan_dataset

    path = cnn_run.path
    config = json.loads((path / "config.json").read_text())
    assert config["data_dir"] == str(tiny_dataset.resolve())
    assert Path(config["data_dir"]).is_absolute()
    assert (config["backbone"], config["weights"], config["image_size"]) == ("vgg16", "none", 32)
    assert config["run"]["dataset_fingerprint"] == scan_dataset(tiny_dataset).fingerprint()
    versions = config["run"]["versions"]
    assert {"python", "keras", "numpy", "scikit-learn"} <= set(versions)
    assert versions["keras"] == keras.__version__

    split = read_split(path / "split.csv")
    assert len(split) == 30
    assert split.groupby("subset").size().to_dict() == {"train": 24, "val": 3, "test": 3}
    labels = json.loads((path / "labels.json").read_text())
    assert labels == ["Celebrity_A", "Celebrity_B", "Celebrity_C"]

    history = pd.read_csv(path / "history.csv")
    assert set(history.columns) >= HISTORY_COLUMNS
    assert list(history["epoch"]) == list(range(len(history)))
    phases = list(history["phase"])
    assert set(phases) == {"head", "fine-tune"}
    assert phases == sorted(phases, key=["head", "fine-tune"].index)  # head first, then fine-tune
    assert history.groupby("phase").size().max() <= 3  # max_epochs is per phase
    lr = history.groupby("phase")["learning_rate"].first()
    assert lr["head"] == pytest.approx(1e-3) and lr["fine-tune"] == pytest.approx(1e-5)
    assert (history["seconds"] > 0).all()
    assert history[["loss", "val_loss", "accuracy", "val_accuracy"]].notna().all().all()

    status = json.loads((path / "status.json").read_text())
    assert status["state"] == "finished" and cnn_run.state == "finished"
    assert status["pid"] == os.getpid() and status["started"] and status["ended"]
    assert status["epochs"] == len(history) and not status["error"]
    assert not (path / ".lock").exists() and not partial_models(path)

    model = keras.models.load_model(path / "model.keras", compile=False, safe_mode=True)
    assert model.output.shape == (None, 3)
    probabilities = model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
    assert probabilities.sum(axis=1) == pytest.approx([1, 1], abs=1e-5)

    log = (path / "log.txt").read_text()
    assert "finished" in log and "random initialisation" in log  # weights none is said

    for subset, n in (("train", 24), ("val", 3), ("test", 3)):
        metrics = json.loads((path / f"metrics_{subset}.json").read_text())
        assert set(metrics) >= METRIC_KEYS, subset
        assert metrics["subset"] == subset and metrics["n"] == n and metrics["labels"] == labels
        assert set(metrics["per_class"]) == set(labels)
        for row in metrics["per_class"].values():
            assert set(row) == {"precision", "recall", "f1", "support"}
        assert np.array(metrics["confusion_matrix"]).shape == (3, 3)
        assert np.sum(metrics["confusion_matrix"]) == n
        assert sum(r["support"] for r in metrics["per_class"].values()) == n
        assert 0 <= metrics["accuracy"] <= 1 and metrics["top5_accuracy"] >= metrics["accuracy"]

    predictions = pd.read_csv(path / "predictions_test.csv")
    p_columns = [f"p_{label}" for label in labels]
    assert {"path", "true", "predicted", "probability", *p_columns} <= set(predictions.columns)
    assert sorted(predictions["path"]) == sorted(split.loc[split["subset"] == "test", "path"])
    p = predictions[p_columns].to_numpy()
    assert p.sum(axis=1) == pytest.approx(np.ones(len(p)), abs=1e-5)
    assert list(predictions["predicted"]) == [labels[i] for i in p.argmax(axis=1)]
    assert predictions["probability"].to_numpy() == pytest.approx(p.max(axis=1))


@pytest.mark.slow
def test_early_stopping_stops_and_restores_the_best_weights(tmp_path):
    from celebmodel.learning.estimator import CelebrityClassifier
    from celebmodel.learning.pipeline import Inputs, model_dataset

    # Noise photos with random labels: nothing generalises, so val loss stops improving
    # within a few epochs, and patience 1 must end training at the first epoch that does not.
    rng = np.random.default_rng(1)
    names = ["a", "b", "c"]
    records = []
    for i, label in enumerate(rng.integers(0, 3, 24)):
        crop = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(crop)
        records.append({"path": crop.name, "label": names[label], "crop": str(crop)})
    train = Inputs(pd.DataFrame(records[:16]), None)
    val = Inputs(pd.DataFrame(records[16:]), None)
    config = small_config(tmp_path, recipe="classic", patience=1, max_epochs=40).resolved()
    history_file = tmp_path / "history.csv"
    classifier = CelebrityClassifier(config, history_file=history_file)
    classifier.fit(train, val, names)
    val = model_dataset(config, val, {name: i for i, name in enumerate(names)})

    history = pd.read_csv(history_file)
    pd.testing.assert_series_equal(history["val_loss"], classifier.history_["val_loss"], rtol=1e-6)
    epochs = len(history)
    assert 2 <= epochs < config.max_epochs
    best, last = history["val_loss"].min(), history["val_loss"].iloc[-1]
    assert history["val_loss"].iloc[-2] == best  # stopped one epoch after the best (patience 1)
    assert last >= best
    val_loss = classifier.model_.evaluate(val, verbose=0, return_dict=True)["loss"]
    assert val_loss == pytest.approx(best, rel=1e-4, abs=1e-5)  # restore_best_weights
    if last - best > 1e-3:
        assert val_loss != pytest.approx(last, rel=1e-4, abs=1e-5)


# --------------------------------------------------------------------------------------------
# evaluation numbers


def test_compute_metrics_against_a_hand_computed_case():
    from celebmodel.scoring.metrics import compute_metrics

    # true  a a a b b c ; predicted a a b b c c
    # confusion (rows true, columns predicted): a [2 1 0], b [0 1 1], c [0 0 1]
    # accuracy = (2 + 1 + 1) / 6 = 0.6667
    # precision a 2/2 = 1, b 1/2 = .5, c 1/2 = .5; recall a 2/3, b 1/2, c 1/1
    # F1 a 2*1*(2/3)/(5/3) = .8, b .5, c 2*.5*1/1.5 = 2/3; support 3, 2, 1
    # weighted P = (3*1 + 2*.5 + 1*.5)/6 = 4.5/6 = .75 ; weighted R = (2 + 1 + 1)/6 = 4/6
    # weighted F1 = (3*.8 + 2*.5 + 2/3)/6 = 4.0667/6 = .67778
    # macro P = (1 + .5 + .5)/3 = 2/3 ; macro R = (2/3 + 1/2 + 1)/3 = 13/18 ; macro F1 = .65556
    # top-5 with 3 classes: every true class is among the top 5 -> 1.0
    y_true = [0, 0, 0, 1, 1, 2]
    probabilities = [
        [0.7, 0.2, 0.1],
        [0.6, 0.3, 0.1],
        [0.3, 0.5, 0.2],
        [0.1, 0.8, 0.1],
        [0.1, 0.4, 0.5],
        [0.2, 0.2, 0.6],
    ]
    m = compute_metrics(np.array(y_true), np.array(probabilities), ["a", "b", "c"])
    assert m["n"] == 6 and m["labels"] == ["a", "b", "c"]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision_weighted"] == pytest.approx(0.75)
    assert m["recall_weighted"] == pytest.approx(4 / 6)
    assert m["f1_weighted"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 2 / 3) / 6)
    assert m["precision_macro"] == pytest.approx(2 / 3)
    assert m["recall_macro"] == pytest.approx(13 / 18)
    assert m["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["top5_accuracy"] == 1.0
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["per_class"]["a"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    )
    assert m["per_class"]["b"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    assert m["per_class"]["c"] == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}
    )
    json.dumps(m)  # plain Python numbers, ready for metrics_<subset>.json


def test_top5_accuracy_against_a_hand_computed_case():
    from celebmodel.scoring.metrics import compute_metrics

    # Six classes, every photo gets the same scores: ranks 0 > 1 > 2 > 3 > 4 > 5.
    # true 0 -> rank 1 (top-1 and top-5 hit); true 5 -> rank 6 (top-5 miss);
    # true 4 -> rank 5 (top-5 hit, a top-4 miss); true 1 -> rank 2 (top-5 hit).
    # accuracy = 1/4 ; top-5 = 3/4
    row = [0.40, 0.25, 0.15, 0.10, 0.06, 0.04]
    m = compute_metrics(np.array([0, 5, 4, 1]), np.array([row] * 4), list("abcdef"))
    assert m["accuracy"] == pytest.approx(0.25)
    assert m["top5_accuracy"] == pytest.approx(0.75)
    # Nothing predicted for b..f: their precision is 0 (zero_division=0), not an error.
    assert m["per_class"]["f"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["precision_macro"] == pytest.approx((1 / 4) / 6)


def test_compute_metrics_on_an_empty_subset():
    from celebmodel.scoring.metrics import compute_metrics

    m = compute_metrics(np.zeros(0), np.zeros((0, 3)), ["a", "b", "c"])
    assert m["n"] == 0 and m["accuracy"] is None and m["confusion_matrix"] == []


def test_overfitting_verdict_in_words():
    from celebmodel.scoring.metrics import overfitting_verdict

    gap = overfitting_verdict({"train": 1.0, "val": 0.5, "test": 0.6})
    assert gap.startswith("Overfitting")
    assert "100.0%" in gap and "50.0% of val" in gap and "test 60.0%" in gap
    close = overfitting_verdict({"train": 0.80, "val": 0.78, "test": 0.75})
    assert close.startswith("No marked overfitting") and "within 5.0 points" in close
    same = overfitting_verdict({"train": 1.0, "val": 1.0, "test": 1.0})
    assert same.startswith("No overfitting: held-out accuracy is as high") and "within" not in same
    assert overfitting_verdict({"train": 0.9, "val": None, "test": None}).startswith("Not enough")
    assert overfitting_verdict({"val": 0.9, "test": 0.8}).startswith("Not enough")


def test_unknown_scores_calibrate_and_open_set_by_hand():
    from celebmodel.scoring.metrics import open_set_metrics
    from celebmodel.scoring.open_set import calibrate, centroids_of, unknown_scores

    # Training faces: a at [1,0] (twice), b at [0,1] -> centroids a [1,0], b [0,1].
    train = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    train_labels = np.array([0, 0, 1])
    centroids = centroids_of(train, train_labels, 2)
    assert centroids == pytest.approx(np.array([[1.0, 0.0], [0.0, 1.0]]))

    # v0 [2,0] -> unit [1,0], predicted a (p .9): distance 0 -> score 0
    # v1 [1,1] -> unit [.7071,.7071], predicted b (p .8):
    #    distance sqrt(.7071^2 + .2929^2) = sqrt(.58579) = .76537 -> x (2 - .8) = .91844
    # v2 [0,-3] -> unit [0,-1], predicted a (p .6): distance sqrt(2) -> x 1.4 = 1.97990
    val = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, -3.0]])
    val_p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    scores = unknown_scores(val, val_p, centroids)
    assert scores == pytest.approx([0.0, 0.91844, 1.97990], abs=1e-4)

    # quantile "higher" of [0, .918, 1.980]: at .95 -> index ceil(1.9) = 2; at .5 -> index 1
    high = calibrate(scores, 0.95)
    assert high["threshold"] == pytest.approx(1.97990, abs=1e-4) and high["n"] == 3
    assert calibrate(scores, 0.5)["threshold"] == pytest.approx(0.91844, abs=1e-4)

    # known .1 .2 .5, unknown .4 .9, threshold .3: unknown rejected 2/2, known accepted 2/3;
    # AUC = share of (known, unknown) pairs with known < unknown = 5/6 (only .5 > .4 fails)
    result = open_set_metrics(np.array([0.1, 0.2, 0.5]), np.array([0.4, 0.9]), 0.3)
    assert result["unknown_rejected"] == 1.0
    assert result["known_accepted"] == pytest.approx(2 / 3)
    assert result["auc"] == pytest.approx(5 / 6)
    assert (result["n_known"], result["n_unknown"]) == (3, 2)
    empty = open_set_metrics(np.array([0.1]), np.zeros(0), 0.3)
    assert empty["auc"] is None and empty["unknown_rejected"] is None


# --------------------------------------------------------------------------------------------
# failed, cancelled and concurrent runs


@pytest.mark.slow
def test_a_run_failing_mid_fit_leaves_no_model(tmp_path, monkeypatch, small_dataset):
    from celebmodel.learning import estimator, training

    original = estimator.HistoryWriter.on_epoch_end

    def explode(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch >= 1:
            raise RuntimeError("boom in epoch 2")

    monkeypatch.setattr(estimator.HistoryWriter, "on_epoch_end", explode)
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom in epoch 2"):
        training.train_run(small_config(small_dataset, recipe="classic", max_epochs=5), run_dir)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed"
    assert status["error"] == "RuntimeError: boom in epoch 2" and status["ended"]
    assert len(pd.read_csv(run_dir / "history.csv")) == 1  # the first epoch was recorded
    assert not (run_dir / "model.keras").exists() and not partial_models(run_dir)
    assert not (run_dir / ".lock").exists()
    assert "boom in epoch 2" in (run_dir / "log.txt").read_text()
    assert signal.getsignal(signal.SIGTERM) != estimator._Stop.handle  # handler restored


@pytest.mark.slow
def test_a_run_failing_while_saving_leaves_no_partial_model(tmp_path, monkeypatch, small_dataset):
    """Also checks split reuse: a split.csv placed in the run dir first is the one used."""
    from celebmodel.data.dataset import make_split, read_split, scan_dataset, write_split
    from celebmodel.learning import training
    from celebmodel.runs.run import Run

    scan = scan_dataset(small_dataset)
    placed, _ = make_split(scan, seed=7)
    default, _ = make_split(scan, seed=0)
    test_rows = sorted(placed.loc[placed["subset"] == "test", "path"])
    assert test_rows != sorted(default.loc[default["subset"] == "test", "path"])
    run_dir = tmp_path / "run"
    write_split(placed, run_dir / "split.csv")

    real_replace = os.replace
    seen = []

    def replace(src, dst, **kwargs):
        if Path(dst).name == "model.keras":
            seen.append(Path(src))
            assert Path(src).is_file()  # the whole model was written beside it first
            raise OSError(28, "No space left on device (simulated)")
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(training.os, "replace", replace)
    config = small_config(small_dataset, recipe="classic", max_epochs=1, seed=0)
    with pytest.raises(OSError, match="No space left"):
        training.train_run(config, run_dir)
    monkeypatch.undo()
    assert seen and seen[0].name.startswith(".model")
    run = Run(run_dir)
    assert run.state == "failed" and "No space left on device" in run.status()["error"]
    assert not run.has_model() and not partial_models(run_dir) and not seen[0].exists()
    assert not (run_dir / ".lock").exists()

    # The placed split (seed 7) was reused, not replaced by the config's seed-0 split ...
    expected = placed.loc[:, ["path", "label", "subset"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(read_split(run.file("split.csv")), expected)
    assert "reusing" in run.log_tail(100)
    # ... and really used: the test predictions are of its test photos.
    assert sorted(run.predictions("test")["path"]) == test_rows


@pytest.mark.slow
def test_a_dataset_with_one_usable_celebrity_fails_cleanly(tmp_path):
    from celebmodel.errors import DatasetError
    from celebmodel.learning.training import train_run

    data = make_dataset(tmp_path / "data", per_class=4, size=32)
    for extra in ("Celebrity_B", "Celebrity_C"):  # leave them with 2 photos each
        for photo in sorted((data / extra).iterdir())[2:]:
            photo.unlink()
    run_dir = tmp_path / "run"
    config = small_config(data, drop_small=True)
    with pytest.raises(DatasetError, match="at least two celebrities"):
        train_run(config, run_dir)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "at least two celebrities" in status["error"]
    assert not (run_dir / "model.keras").exists() and not (run_dir / ".lock").exists()


def _wait_for(condition, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"trainer ended early:\n{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the trainer")
        time.sleep(0.3)


@pytest.mark.slow
def test_sigterm_cancels_a_training_and_a_second_trainer_is_refused(tmp_path, small_dataset):
    from celebmodel.errors import RunError
    from celebmodel.learning.training import train_run
    from celebmodel.runs.run import Run

    data = small_dataset
    run_dir = tmp_path / "run"
    env = dict(os.environ)  # CELEBMODEL_RUNS and _DATA point into pytest's temporary folder
    args = [sys.executable, "-m", "celebmodel", "train", str(data), "--run-dir", str(run_dir)]
    args += ["--weights", "none", "--image-size", "32", "--no-faces", "--recipe", "classic"]
    args += ["--max-epochs", "500", "--patience", "500"]
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        history = run_dir / "history.csv"
        _wait_for(
            lambda: history.is_file() and len(history.read_text().splitlines()) >= 2, 180, proc
        )
        assert Run(run_dir).state == "running"
        # A second trainer on the same run directory is refused while the first one lives.
        with pytest.raises(RunError, match=f"another training \\(pid {proc.pid}\\)"):
            train_run(small_config(data, recipe="classic"), run_dir)
        assert Run(run_dir).status()["pid"] == proc.pid  # and it did not touch the status
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "cancelled" in stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "cancelled" and "SIGTERM" in status["error"]
    assert not (run_dir / "model.keras").exists() and not partial_models(run_dir)
    assert not (run_dir / ".lock").exists()


@pytest.mark.slow
def test_sigterm_in_the_first_seconds_cancels_at_once(tmp_path, small_dataset):
    """Stopped while TensorFlow is still being imported (on its own thread, beside the face
    stage): the trainer ends cancelled in seconds, not after the import or every photo."""
    from celebmodel.runs.run import Run

    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "celebmodel", "train", str(small_dataset)]
    args += ["--run-dir", str(run_dir), "--backbone", "dlib128"]
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(lambda: Run(run_dir).file("status.json").is_file(), 60, proc)
        _wait_for(lambda: Run(run_dir).state == "running", 60, proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "cancelled" and "SIGTERM" in status["error"]
    assert not (run_dir / ".lock").exists() and "Fatal Python error" not in stderr


def _tree_digest(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in folder.rglob("*") if f.is_file()}


@pytest.mark.slow
def test_sigkill_mid_epoch_reads_failed_and_the_next_training_starts(
    tmp_path, small_dataset, cnn_run
):
    """The app's own path (``jobs.start``), killed the way the OOM killer would: no handler runs."""
    from celebmodel.learning import jobs
    from celebmodel.runs.run import Run, best_run, list_runs

    root = tmp_path / "runs"
    previous = root / "20240101-000000-vgg16"
    shutil.copytree(cnn_run.path, previous)
    before = _tree_digest(previous)
    config = small_config(small_dataset, recipe="classic", max_epochs=500, patience=500)

    run = jobs.start(config, root)
    history = run.file("history.csv")
    deadline = time.monotonic() + 180
    while not (history.is_file() and len(history.read_text().splitlines()) >= 3):
        assert run.state in ("queued", "running"), jobs.output_tail(run)
        assert time.monotonic() < deadline, "timed out waiting for two epochs"
        time.sleep(0.2)
    pid = run.status()["pid"]
    assert run.state == "running" and pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while run.state in ("queued", "running"):
        assert time.monotonic() < deadline, "the killed run still reads as running"
        time.sleep(0.1)

    status = run.status()
    assert status["state"] == "failed" and status["error"]
    assert not run.has_model() and not partial_models(run.path)
    assert jobs.active(root) is None
    assert _tree_digest(previous) == before  # the finished run is untouched ...
    assert best_run(root).path == previous  # ... and still the model the app preselects

    after = jobs.start(small_config(small_dataset, max_epochs=1), root)
    deadline = time.monotonic() + 300
    while after.state in ("queued", "running"):
        assert time.monotonic() < deadline, "the next training did not finish"
        time.sleep(0.5)
    assert after.state == "finished" and after.has_model(), jobs.output_tail(after)
    assert {r.path for r in list_runs(root)} == {previous, run.path, after.path}
    assert Run(run.path).state == "failed"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_dead_training_process_reads_as_failed(tmp_path):
    from celebmodel.runs.run import Run
    from celebmodel.storage import atomic_write_json

    run = Run(tmp_path)
    atomic_write_json(run.file("status.json"), {"state": "running", "pid": _dead_pid()})
    status = run.status()
    assert status["state"] == "failed" and "ended without finishing" in status["error"]
    atomic_write_json(run.file("status.json"), {"state": "running", "pid": os.getpid()})
    assert run.state == "running"
    run.file("status.json").write_text("{half a fi")
    assert run.state == "failed"


def test_a_stale_lock_is_taken_over_and_a_live_one_refused(tmp_path):
    from celebmodel.errors import RunError
    from celebmodel.learning.training import _lock
    from celebmodel.runs.run import Run

    run = Run(tmp_path)
    run.file(".lock").write_text(str(_dead_pid()))
    _lock(run)
    assert run.file(".lock").read_text() == str(os.getpid())
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        run.file(".lock").write_text(str(sleeper.pid))
        with pytest.raises(RunError, match=f"pid {sleeper.pid}"):
            _lock(run)
        assert run.file(".lock").read_text() == str(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


# --------------------------------------------------------------------------------------------
# the runs module


def _fake_run(root: Path, name: str, state: str, accuracy: float | None = None, model=True):
    from celebmodel.storage import atomic_write_json

    path = root / name
    path.mkdir(parents=True)
    atomic_write_json(path / "status.json", {"state": state, "pid": os.getpid()})
    if accuracy is not None:
        atomic_write_json(path / "metrics_test.json", {"accuracy": accuracy})
    if model:
        (path / "model.keras").write_bytes(b"stand-in")
    return path


def test_list_runs_newest_first_and_best_run(tmp_path):
    from celebmodel.runs.run import best_run, list_runs

    assert list_runs(tmp_path / "missing") == [] and best_run(tmp_path) is None
    _fake_run(tmp_path, "20250101-090000-vgg16", "finished", 0.7)
    _fake_run(tmp_path, "20250103-090000-resnet50", "finished", 0.9)
    _fake_run(tmp_path, "20250104-090000-vgg16", "finished", 0.9)
    _fake_run(tmp_path, "20250105-090000-vgg16", "failed", 0.99)
    _fake_run(tmp_path, "20250106-090000-vgg16", "finished", 0.95, model=False)
    _fake_run(tmp_path, "20250102-090000-vgg16", "running")
    (tmp_path / "not-a-run").mkdir()
    names = [run.name for run in list_runs(tmp_path)]
    assert names == [
        "20250106-090000-vgg16",
        "20250105-090000-vgg16",
        "20250104-090000-vgg16",
        "20250103-090000-resnet50",
        "20250102-090000-vgg16",
        "20250101-090000-vgg16",
    ]
    # Best = finished with a model; on a tie in accuracy, the newer one.
    assert best_run(tmp_path).name == "20250104-090000-vgg16"


def test_delete_run_refuses_an_active_run(tmp_path):
    from celebmodel.errors import RunError
    from celebmodel.runs.run import Run, delete_run

    active = Run(_fake_run(tmp_path, "20250101-000000-vgg16", "running"))
    with pytest.raises(RunError, match="still running"):
        delete_run(active)
    assert active.path.is_dir()
    done = Run(_fake_run(tmp_path, "20250102-000000-vgg16", "finished", 0.5))
    delete_run(done)
    assert not done.path.exists()


def test_new_run_dir_never_collides(tmp_path):
    from celebmodel.runs.run import new_run_dir

    made = [new_run_dir("vgg16", tmp_path) for _ in range(25)]
    lock = threading.Lock()

    def make():
        path = new_run_dir("vgg16", tmp_path)
        with lock:
            made.append(path)

    threads = [threading.Thread(target=make) for _ in range(25)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 50 and len(set(made)) == 50
    assert all(path.is_dir() and path.parent == tmp_path for path in made)
    assert all(path.name.split("-")[2] == "vgg16" for path in made)
    assert new_run_dir("my net/v2", tmp_path).name.endswith("my_net_v2")
