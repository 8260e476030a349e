"""The CNN trained from scratch (clusterlens.features.scratch_cnn_training): training, determinism, Keras callback
semantics, saving and reloading, DVCLive logs, augmentation, params. Small generated data
(3 colours x 30 images at 16 px), a few epochs each."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from clusterlens.config.base import parse_section
from clusterlens.config.cnn import CNNParams
from clusterlens.core.errors import DataError, ParamError
from clusterlens.features import scratch_cnn, scratch_cnn_training
from tests.conftest import make_tree

CLASSES = ["apple", "berry", "cherry"]
# BatchNorm moving averages at 0.5 (default: 0.99) so eval-mode statistics settle within the
# handful of batches these tests train for.
FAST = CNNParams(image_size=16, epochs=4, learning_rate=1e-3, batchnorm_momentum=0.5)


def replace(p: CNNParams, **changes) -> CNNParams:
    """A validated copy of ``p`` with some settings changed."""
    return CNNParams(**{**p.model_dump(), **changes})


def parse(section: dict) -> CNNParams:
    return parse_section({"cnn": section}, "cnn", CNNParams)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_tree(tmp_path_factory.mktemp("cnn") / "images", {c: 30 for c in CLASSES},
                     seed=1, size=(20, 20))
    paths = sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))
    labels = np.array([CLASSES.index(p.split("/")[0]) for p in paths])
    images = scratch_cnn_training.decode_images(root, paths, FAST.image_size, progress=False)
    return root, paths, labels, images


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """One full train_cnn run (decode, train, save, DVCLive), from an empty working directory
    so that DVCLive finds no DVC/Git repository around it."""
    root, paths, labels, _ = data
    work = tmp_path_factory.mktemp("cnn_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        summary = scratch_cnn_training.train_cnn(root, paths, labels, CLASSES, FAST, 0, work / "model",
                                work / "live", "cpu", progress=False)
    return work, summary


def _fit(data, p=FAST, seed=0):
    _, _, labels, images = data
    return scratch_cnn_training.fit_cnn(images, labels, len(CLASSES), p, seed, "cpu", progress=False)


# --------------------------------------------------------------------------- training
def test_training_learns_the_easy_classes(trained):
    work, summary = trained
    hist = pd.read_csv(work / "model" / "history.csv")
    assert list(hist.columns) == ["epoch", "train_loss", "val_loss", "train_acc", "val_acc", "lr"]
    assert list(hist["epoch"]) == list(range(1, len(hist) + 1)) == [1, 2, 3, 4]
    assert hist["train_loss"].iloc[-1] < 0.5 * hist["train_loss"].iloc[0]
    assert hist["val_loss"].min() < 0.5 * hist["val_loss"].iloc[0]
    assert summary["best_val_acc"] >= 0.9
    assert summary["n_train"] == 72 and summary["n_val"] == 18 and summary["n_classes"] == 3
    on_disk = json.loads((work / "model" / "summary.json").read_text())
    assert on_disk["best_epoch"] == summary["best_epoch"] == int(hist["val_loss"].idxmin()) + 1
    assert on_disk["best_val_loss"] == pytest.approx(hist["val_loss"].min())
    assert "seconds" not in on_disk and summary["seconds_per_epoch"] > 0


def test_dvclive_logs_every_epoch_and_leaves_no_dvc_yaml(trained):
    work, summary = trained
    live = work / "live"
    metrics = json.loads((live / "metrics.json").read_text())
    assert metrics["best"]["best_epoch"] == summary["best_epoch"]
    assert metrics["val"]["loss"] == pytest.approx(
        pd.read_csv(work / "model" / "history.csv")["val_loss"].iloc[-1])
    for name in ("train/loss", "val/loss", "train/accuracy", "val/accuracy", "lr"):
        tsv = pd.read_csv(live / "plots" / "metrics" / f"{name}.tsv", sep="\t")
        assert list(tsv["step"]) == list(range(summary["epochs_run"])), name
    assert not list(work.rglob("dvc.yaml")) and not (work / ".dvc").exists()


def test_saved_weights_reload_to_the_same_embeddings(data, tmp_path):
    res = _fit(data, replace(FAST, epochs=2))
    config = scratch_cnn_training.model_config(3, CLASSES, FAST, 0)
    scratch_cnn_training.save_cnn(res.model, config, tmp_path)
    x = scratch_cnn_training.to_unit(data[3][:10])
    with torch.no_grad():
        expected = res.model.eval().features(x)
        got = scratch_cnn.load_cnn_features(tmp_path)(x)
    assert got.shape == (10, 256)
    assert torch.equal(got, expected)
    assert (got >= 0).all() and got.abs().sum() > 0  # the ReLU'd Dense-256 layer
    saved = scratch_cnn.read_cnn_config(tmp_path)
    assert saved["class_names"] == CLASSES
    assert list(saved["params"]) == list(CNNParams.model_fields)
    assert saved["params"] == {**FAST.model_dump(), "filters": [32, 64, 128]}
    # strict loading: a config that does not match the weights fails loudly
    bad = dict(config, embedding_dim=128)
    (tmp_path / "config.json").write_text(json.dumps(bad))
    with pytest.raises(RuntimeError, match="size mismatch"):
        scratch_cnn.load_cnn(tmp_path)


def test_embedding_network_runs_in_the_extract_engine(data, tmp_path):
    """``extract`` traces + freezes backbones in channels-last on CPU: the loaded embedding
    network must survive that and give the same features."""
    from clusterlens.features.extraction import prepare_model

    res = _fit(data, replace(FAST, epochs=1))
    scratch_cnn_training.save_cnn(res.model, scratch_cnn_training.model_config(3, CLASSES, FAST, 0), tmp_path)
    x = scratch_cnn_training.to_unit(data[3][:8])
    with torch.no_grad():
        eager = scratch_cnn.load_cnn_features(tmp_path)(x)
        model, engine = prepare_model(scratch_cnn.load_cnn_features(tmp_path), torch.device("cpu"),
                                      tuple(x.shape), "fp32", jit=True)
        traced = model(x.contiguous(memory_format=torch.channels_last))
    assert engine == "jit"
    assert torch.allclose(traced, eager, atol=1e-4, rtol=1e-4)


def test_seeded_runs_repeat_exactly(data):
    p = replace(FAST, epochs=2)
    a, b, c = _fit(data, p, 0), _fit(data, p, 0), _fit(data, p, 1)
    pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)
    sa, sb, sc = (r.model.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["features.block1.0.weight"], sc["features.block1.0.weight"])
    # the caller's global RNG is left alone
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    _fit(data, replace(FAST, epochs=1))
    assert torch.equal(torch.rand(3), before)


def test_early_stopping_restores_best_weights_and_lr_reductions_are_recorded(data, tmp_path,
                                                                              monkeypatch):
    """A min_delta no epoch can beat: epoch 1 is the best, every later epoch counts as
    'no improvement'. Keras then cuts the LR after each bad epoch (lr_patience 1) and stops
    after two bad epochs (patience 2), restoring epoch 1's weights."""
    root, paths, labels, images = data
    p = replace(FAST, epochs=10, patience=2, min_delta=100.0, lr_patience=1,
                            lr_min_delta=100.0, lr_factor=0.5)
    monkeypatch.chdir(tmp_path)
    summary = scratch_cnn_training.train_cnn(root, paths, labels, CLASSES, p, 0, tmp_path / "m",
                            tmp_path / "live", "cpu", progress=False)
    hist = pd.read_csv(tmp_path / "m" / "history.csv")
    assert summary["stopped_early"] and summary["epochs_run"] == 3 == len(hist)
    assert summary["train_only_classes"] == []  # every class has 2+ images
    assert summary["best_epoch"] == 1
    assert list(hist["lr"]) == [p.learning_rate, p.learning_rate, p.learning_rate / 2]
    assert summary["lr_reduction_epochs"] == [2, 3] and summary["lr_reductions"] == 2
    assert summary["final_lr"] == p.learning_rate / 4
    # the saved weights are epoch 1's: they give its validation loss, not the last epoch's
    _, val_idx = scratch_cnn_training.split_train_val(labels, p.val_fraction, 0)
    loss, acc = scratch_cnn_training.evaluate(scratch_cnn.load_cnn(tmp_path / "m"), images, labels, p.batch_size, p.l2,
                             "cpu", val_idx)
    assert loss == pytest.approx(hist["val_loss"].iloc[0], rel=1e-5)
    assert loss == pytest.approx(summary["best_val_loss"], rel=1e-5)
    assert acc == pytest.approx(hist["val_acc"].iloc[0])
    assert abs(loss - hist["val_loss"].iloc[-1]) > 1e-3


# --------------------------------------------------------------------------- Keras semantics
def _lrs(losses, **kw):
    p = replace(CNNParams(), **kw)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=p.learning_rate)
    sched = scratch_cnn_training.keras_plateau_scheduler(opt, p)
    out = []
    for v in losses:
        sched.step(v)
        out.append(opt.param_groups[0]["lr"])
    return out


def test_plateau_scheduler_matches_keras_counting():
    # Keras ReduceLROnPlateau(patience=3): cut on the 3rd epoch without improvement
    lrs = _lrs([1.0] * 8, learning_rate=1.0, lr_factor=0.5, lr_patience=3)
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    # an improvement smaller than min_delta (absolute, 1e-4) is no improvement
    lrs = _lrs([1.0, 0.99995, 0.99992, 0.99991, 0.5], learning_rate=1.0, lr_patience=3)
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5]
    # never below min_lr, and no change once there
    lrs = _lrs([1.0] * 6, learning_rate=1.0, lr_factor=0.1, lr_patience=1, min_lr=0.05)
    assert lrs == [1.0, 0.1, 0.05, 0.05, 0.05, 0.05]


def test_early_stopping_matches_keras_counting():
    stop = scratch_cnn_training.KerasEarlyStopping(patience=3)
    losses = [5.0, 4.0, 3.0, 3.5, 2.9, 3.1, 3.2, 3.3, 1.0]
    stopped = next(e for e, v in enumerate(losses, 1) if stop.update(e, v))
    assert stopped == 8 == stop.stopped_epoch and stop.best_epoch == 5 and stop.best == 2.9
    stop = scratch_cnn_training.KerasEarlyStopping(patience=1)
    assert not stop.update(1, math.nan)  # never stops after the first epoch
    assert stop.update(2, math.nan)


# --------------------------------------------------------------------------- pieces
def test_decode_matches_extract_preprocess(data):
    from clusterlens.data.images import load_rgb
    from clusterlens.features.extraction import preprocess

    root, paths, _, images = data
    for i in (0, 45, 89):
        ref = preprocess(load_rgb(root / paths[i]), 16, "squash", (0, 0, 0), (1, 1, 1))
        assert torch.equal(scratch_cnn_training.to_unit(images[i]), ref)


def test_augmentation_is_seeded_per_image_and_keras_like():
    x = torch.rand(16, 3, 12, 12)
    p = CNNParams()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = scratch_cnn_training.augment_batch(x, p, g1), scratch_cnn_training.augment_batch(x, p, g2)
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.equal(scratch_cnn_training.augment_batch(x, p, g1), a)  # the stream moves on
    assert a.min() >= 0 and a.max() <= 1  # reflect fill: no black corners, no overshoot
    # per image: the same image repeated gets different transforms
    same = scratch_cnn_training.augment_batch(x[:1].repeat(8, 1, 1, 1), p, torch.Generator().manual_seed(0))
    assert len({round(float(v), 5) for v in same.sum(dim=(1, 2, 3))}) == 8
    # flip only: exactly a mirror image, about half of the batch
    only_flip = CNNParams(rotation=0.0, zoom=0.0, translate=0.0, flip=True)
    theta = scratch_cnn_training.augment_params(16, only_flip, torch.Generator().manual_seed(4))
    out = scratch_cnn_training.augment_batch(x, only_flip, torch.Generator().manual_seed(4))
    flipped = theta[:, 0, 0] < 0
    assert 0 < int(flipped.sum()) < 16
    ref = torch.where(flipped[:, None, None, None], x.flip(3), x)
    assert torch.allclose(out, ref, atol=1e-5)
    # rotation 0.15 (Keras: a fraction of a full turn) reaches +-54 degrees
    rot = CNNParams(rotation=0.15, zoom=0.0, translate=0.0, flip=False)
    th = scratch_cnn_training.augment_params(2000, rot, torch.Generator().manual_seed(0)).double()
    deg = torch.rad2deg(torch.atan2(th[:, 1, 0], th[:, 1, 1]))
    assert 50 < float(deg.abs().max()) <= 54.0 + 1e-6
    none = CNNParams(rotation=0.0, zoom=0.0, translate=0.0, flip=False)
    assert scratch_cnn_training.augment_batch(x, none, g1) is x


def test_model_matches_the_seed_architecture():
    m = scratch_cnn_training.ScratchCNN(233)
    # what Keras' model.summary() counts for the reference model with 233 classes (BatchNorm
    # moving statistics included; PyTorch keeps those as buffers)
    n_params = sum(p.numel() for p in m.parameters())
    n_bn_buffers = sum(b.numel() for n, b in m.named_buffers() if "running" in n)
    assert n_params + n_bn_buffers == 380_809
    kernels = m.regularized_kernels()
    assert len(kernels) == 7  # six convs + the embedding dense; not the output layer
    assert all(k is not m.head.output.weight for k in kernels)
    expected = sum(float((k.detach() ** 2).sum()) for k in kernels)
    assert float(m.l2_penalty().detach()) == pytest.approx(expected, rel=1e-6)
    x = torch.rand(2, 3, 16, 16)
    assert m.eval().features(x).shape == (2, 256) and m(x).shape == (2, 233)


def test_split_is_stratified_and_seeded():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    tr, va = scratch_cnn_training.split_train_val(labels, 0.2, 7)
    assert len(va) == 20 and np.bincount(labels[va]).tolist() == [10, 6, 4]
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(100))
    assert np.array_equal(va, scratch_cnn_training.split_train_val(labels, 0.2, 7)[1])
    assert not np.array_equal(va, scratch_cnn_training.split_train_val(labels, 0.2, 8)[1])
    with pytest.raises(DataError, match="val_fraction"):  # 1 validation image for 2 classes
        scratch_cnn_training.split_train_val(np.array([0, 0, 1, 1]), 0.2, 0)


def test_a_single_image_class_trains_unvalidated_and_a_two_image_class_is_split():
    labels = np.repeat([0, 1, 2, 3], [20, 1, 2, 17])  # 1: lonely, 2: pair
    tr, va = scratch_cnn_training.split_train_val(labels, 0.25, 7)
    assert scratch_cnn_training.train_only_classes(labels).tolist() == [1]
    assert 20 in tr and 1 not in labels[va]  # the lonely image trains
    assert np.bincount(labels[va], minlength=4)[2] == 1 and np.sum(labels[tr] == 2) == 1
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(40))
    # the other classes split as they would alone
    rest = np.flatnonzero(labels != 1)
    from sklearn.model_selection import train_test_split
    ref_tr, ref_va = train_test_split(rest, test_size=0.25, random_state=7, stratify=labels[rest])
    np.testing.assert_array_equal(va, np.sort(ref_va))
    np.testing.assert_array_equal(tr, np.sort(np.concatenate([ref_tr, [20]])))
    with pytest.raises(DataError, match="no class has 2 images"):
        scratch_cnn_training.split_train_val(np.array([0, 1, 2]), 0.2, 0)


# --------------------------------------------------------------------------- params
def test_params_defaults_are_the_reference_recipe():
    p = parse({})
    assert p == CNNParams()
    assert (p.filters, p.embedding_dim, p.batch_size, p.epochs, p.learning_rate, p.l2) == (
        (32, 64, 128), 256, 32, 50, 5e-4, 1e-4)
    assert (p.patience, p.lr_factor, p.lr_patience, p.min_lr, p.val_fraction) == (
        5, 0.5, 3, 1e-7, 0.2)
    assert (p.rotation, p.zoom, p.translate, p.flip) == (0.15, 0.15, 0.1, True)
    # YAML 1.1 readers keep `5e-4` (no dot) as a string: accepted when it is a number
    p = parse({"learning_rate": "5e-4", "filters": [8, 16], "image_size": 4})
    assert p.learning_rate == 5e-4 and p.filters == (8, 16) and p.image_size == 4
    # integers given for real-valued settings are kept as floats (config.json stays the same)
    assert type(parse({"min_delta": 0}).min_delta) is float


@pytest.mark.parametrize("key, value", [
    ("image_size", 4), ("image_size", 32.0), ("batch_size", 0), ("epochs", True),
    ("learning_rate", 0), ("learning_rate", "fast"), ("l2", -1e-4), ("dropout_conv", 1.0),
    ("dropout_dense", -0.1), ("val_fraction", 0.0), ("val_fraction", 1), ("patience", 0),
    ("lr_factor", 1.0), ("lr_patience", 0), ("min_lr", -1), ("rotation", 1.5),
    ("zoom", 1.0), ("translate", -0.1), ("flip", "yes"), ("embedding_dim", 0),
    ("filters", []), ("filters", [32, 0]), ("batchnorm_momentum", 1.0), ("min_delta", math.inf),
    ("device", "gpu"), ("epoch", 5),
])
def test_bad_params_name_the_key(key, value):
    with pytest.raises(ParamError) as err:
        parse({key: value})
    assert err.value.key == f"cnn.{key}"
    assert f"`cnn.{key}`" in str(err.value)


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ParamError, match="did you mean `cnn.epochs`"):
        parse({"epoch": 5})


def test_device_names_are_checked():
    assert scratch_cnn.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        scratch_cnn.resolve_device("gpu")
    with pytest.raises(ValueError, match="not available"):
        scratch_cnn.resolve_device(f"cuda:{torch.cuda.device_count()}")
