"""A small CNN trained from scratch on the class labels; its 256-D layer is a feature backbone.

The architecture and training recipe are those of a reference Keras model (a small "custom
CNN" for image classification), reproduced in PyTorch; every number is a setting of
:class:`~clusterlens.config.cnn.CNNParams`:

    3 blocks, filters 32 / 64 / 128, each:
        Conv 3x3 'same' + ReLU, Conv 3x3 'same' + ReLU, BatchNorm, MaxPool 2,
        Dropout 0.25 (blocks 2 and 3 only)
    GlobalAveragePooling -> Dense 256 + ReLU (``embedding``) -> Dropout 0.5 -> Dense n_classes

- Input: RGB squash-resized (bilinear) to ``image_size``, pixels scaled to [0, 1] (Keras
  ``x / 255``), no mean/std normalisation.
- Keras defaults kept: Glorot-uniform kernels and zero biases; BatchNorm epsilon 1e-3 and
  moving-average momentum 0.99 (``batchnorm_momentum``, Keras convention: the weight of the
  old value); Adam epsilon 1e-7.
- L2 as ``keras.regularizers.l2``: ``loss += l2 * sum(w**2)`` over the kernels (not biases, not
  BatchNorm) of every conv and of the embedding dense; the output dense has none. Like Keras,
  the reported train and validation losses include this penalty, so early stopping and LR
  reduction watch the same number Keras does.
- Augmentation (training batches only; the Keras layers RandomFlip horizontal,
  RandomRotation(0.15), RandomZoom(0.15), RandomTranslation(0.1, 0.1)): each image gets its own
  flip, angle ``U(-rotation, rotation) * 360`` degrees, zoom ``1 + U(-zoom, zoom)`` (the Keras
  coordinate scale: > 1 zooms out) and shifts ``U(-translate, translate)`` of the width /
  height, composed into one affine warp (bilinear, reflect fill = Keras' default ``fill_mode``)
  done on the device for the whole batch. The random numbers come from a seeded CPU
  ``torch.Generator``, so a seeded run repeats exactly on CPU and draws the same augmentations
  on CUDA.
- Split: stratified ``train_test_split`` with ``test_size=val_fraction`` and the seed.
- Adam(``learning_rate``), batch ``batch_size``, at most ``epochs`` epochs; Keras EarlyStopping on
  ``val_loss`` (``patience``, ``min_delta``, restore best weights, also when all epochs ran, as
  Keras 3 does) and ReduceLROnPlateau (``lr_factor``, ``lr_patience``, ``lr_min_delta``,
  ``min_lr``) through ``torch.optim.lr_scheduler.ReduceLROnPlateau`` with Keras-equivalent
  settings (its ``patience`` counts differently: Keras' ``p`` is PyTorch's ``p - 1``).

Outputs of :func:`train_cnn`: ``weights.npz`` (state_dict tensors as arrays), ``config.json``
(all that :func:`load_cnn` needs to rebuild the module), ``history.csv`` (epoch, train_loss,
val_loss, train_acc, val_acc, lr), ``summary.json``; DVCLive logs per epoch under ``live_dir``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from clusterlens.config.cnn import CNNParams
from clusterlens.core.devices import resolve_device
from clusterlens.core.errors import DataError
from clusterlens.core.io import atomic_path, save_npz, write_table
from clusterlens.data.images import load_rgb
from clusterlens.features.scratch_cnn import (
    ARCHITECTURE,
    CONFIG_FILE,
    FORMAT,
    KERAS_BN_EPS,
    WEIGHTS_FILE,
    ScratchCNN,
)

log = logging.getLogger("clusterlens.features.scratch_cnn_training")

KERAS_ADAM_EPS = 1e-7  # keras.optimizers.Adam default epsilon
HISTORY_FILE = "history.csv"
SUMMARY_FILE = "summary.json"
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "train_acc", "val_acc", "lr"]


# --------------------------------------------------------------------------- images
def decode_images(root: str | Path, paths: Sequence[str], image_size: int,
                  workers: int | None = None, progress: bool = True) -> torch.Tensor:
    """Decode every image once into a uint8 tensor.

    Each image goes through the pipeline's loader (:func:`clusterlens.data.images.load_rgb`), then a
    bilinear squash resize: exactly what the feature extraction's preprocessing gives (squash,
    mean 0, std 1), times 255.

    Parameters
    ----------
    root : str or PathLike
        The image folder.
    paths : sequence of str
        Image paths relative to ``root``.
    image_size : int
        Side of the square the images are resized to.
    workers : int, optional
        Decoding threads (default: up to 4).
    progress : bool
        Show a progress bar.

    Returns
    -------
    torch.Tensor
        uint8, shape (N, 3, image_size, image_size).

    Raises
    ------
    DataError
        When an image cannot be read any more (the folder changed after indexing).
    """
    root = Path(root)

    def one(rel: str) -> np.ndarray:
        path = root / rel
        try:
            img = load_rgb(path)
        except Exception as exc:  # the index said it was fine: the folder changed since
            raise DataError(f"{path}: cannot be read any more ({type(exc).__name__}: {exc}); "
                            "the folder changed after indexing: run `dvc repro` again") from exc
        img = img.resize((image_size, image_size), Image.BILINEAR)
        return np.array(img, dtype=np.uint8).transpose(2, 0, 1)  # a writable copy

    out = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, arr in enumerate(tqdm(pool.map(one, paths), total=len(paths), desc="decode",
                                     unit="img", disable=not progress, mininterval=1.0)):
            out[i] = torch.from_numpy(arr)
    return out


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (Keras ``Rescaling(1/255)``), on the same device."""
    return images.float().div_(255.0)


def augment_params(n: int, p: CNNParams, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) affine matrices, float32 on the CPU, for ``torch.nn.functional.affine_grid``
    (normalised output coordinates -> input coordinates). Five uniforms are drawn per image
    whatever the settings, so switching one augmentation off leaves the others' draws alone."""
    u = torch.rand((n, 5), generator=generator, dtype=torch.float64)
    flipped = u[:, 0] < 0.5 if p.flip else torch.zeros(n, dtype=torch.bool)
    flip = torch.where(flipped, -1.0, 1.0).double()
    angle = (2 * u[:, 1] - 1) * p.rotation * 2 * math.pi
    zoom = 1 + (2 * u[:, 2] - 1) * p.zoom
    # a shift of f * width is 2 f in normalised coordinates ([-1, 1] spans the image)
    tx = (2 * u[:, 3] - 1) * p.translate * 2
    ty = (2 * u[:, 4] - 1) * p.translate * 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    # input = Flip . Rot . (zoom * (out + t)): Keras applies flip, rotation, zoom, translation
    # in turn, each sampling its input at a transformed output coordinate.
    a = torch.stack([torch.stack([flip * cos, -flip * sin], 1),
                     torch.stack([sin, cos], 1)], 1) * zoom[:, None, None]
    t = torch.stack([tx, ty], 1)
    b = torch.einsum("nij,nj->ni", a, t)
    return torch.cat([a, b[:, :, None]], 2).float()


def augmentation_enabled(p: CNNParams) -> bool:
    """Whether ``p`` asks for any augmentation (flip, rotation, zoom or translation)."""
    return p.flip or p.rotation > 0 or p.zoom > 0 or p.translate > 0


def augment_batch(x: torch.Tensor, p: CNNParams, generator: torch.Generator) -> torch.Tensor:
    """Random flip / rotation / zoom / translation of a float batch (B, 3, S, S) on its device:
    one bilinear warp per image, reflect fill (Keras' default ``fill_mode``)."""
    if not augmentation_enabled(p):
        return x
    theta = augment_params(x.shape[0], p, generator).to(x.device, non_blocking=True)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


# --------------------------------------------------------------------------- model
def init_keras(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Keras' initialisation: Glorot-uniform kernels, zero biases (BatchNorm: ones / zeros)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight, generator=generator)
            nn.init.zeros_(m.bias)
    return model


def build_cnn(n_classes: int, p: CNNParams) -> ScratchCNN:
    """A freshly constructed (not yet initialised) model with the architecture of ``p``."""
    return ScratchCNN(n_classes, p.filters, p.embedding_dim, p.dropout_conv, p.dropout_dense,
                      p.batchnorm_momentum)


def model_config(n_classes: int, class_names: Sequence[str], p: CNNParams, seed: int) -> dict:
    """Everything ``load_cnn`` needs to rebuild the module, plus how inputs must be prepared."""
    return {
        "format": FORMAT, "architecture": ARCHITECTURE, "n_classes": int(n_classes),
        "class_names": [str(c) for c in class_names], "image_size": p.image_size,
        "filters": list(p.filters), "embedding_dim": p.embedding_dim,
        "dropout_conv": p.dropout_conv, "dropout_dense": p.dropout_dense,
        "batchnorm_momentum": p.batchnorm_momentum, "batchnorm_eps": KERAS_BN_EPS,
        "input": {"channels": "RGB", "resize": "squash", "interpolation": "bilinear",
                  "range": [0.0, 1.0], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        "seed": int(seed), "params": {**p.model_dump(), "filters": list(p.filters)},
    }


# --------------------------------------------------------------------------- callbacks
class KerasEarlyStopping:
    """``keras.callbacks.EarlyStopping(monitor='val_loss', restore_best_weights=True)``:
    improvement = value < best - min_delta; stop once ``patience`` epochs in a row did not
    improve (never after the first epoch); the best epoch's weights are kept for restoring."""

    def __init__(self, patience: int, min_delta: float = 0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.best_epoch, self.wait = math.inf, 0, 0
        self.best_state: dict | None = None
        self.stopped_epoch = 0

    def update(self, epoch: int, value: float, model: nn.Module | None = None) -> bool:
        """Record epoch ``epoch`` (1-based) with monitored ``value``; True means stop now."""
        if self.best_state is None and model is not None:
            self.best_state, self.best_epoch = snapshot(model), epoch
        self.wait += 1
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if model is not None:
                self.best_state = snapshot(model)
            return False
        if self.wait >= self.patience and epoch > 1:
            self.stopped_epoch = epoch
            return True
        return False

    def restore(self, model: nn.Module) -> None:
        """Load the best epoch's weights back into ``model``."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def snapshot(model: nn.Module) -> dict:
    """A detached copy of the model's state_dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def keras_plateau_scheduler(optimizer: torch.optim.Optimizer, p: CNNParams):
    """``torch.optim.lr_scheduler.ReduceLROnPlateau`` behaving as
    ``keras.callbacks.ReduceLROnPlateau(monitor='val_loss', factor, patience, min_delta,
    min_lr)``: absolute threshold (Keras ``min_delta``), cooldown 0, reduce whenever the rate is
    above ``min_lr`` (eps 0). Keras reduces on the ``patience``-th epoch without improvement,
    PyTorch once ``num_bad_epochs > patience``, hence ``patience - 1``."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=p.lr_factor, patience=p.lr_patience - 1,
        threshold=p.lr_min_delta, threshold_mode="abs", cooldown=0, min_lr=p.min_lr, eps=0.0)


# --------------------------------------------------------------------------- training
def train_only_classes(labels: np.ndarray) -> np.ndarray:
    """The labels with fewer than 2 images: too few for the stratified split (one image on each
    side), so :func:`split_train_val` puts all their images in the training part."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    return np.flatnonzero((counts > 0) & (counts < 2))


def split_train_val(labels: np.ndarray, val_fraction: float, seed: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of row numbers (sklearn ``train_test_split``, ``random_state=seed``).

    The images of a class with a single image (:func:`train_only_classes`) all go to the
    training part (the class is trained on, never validated); the others are split as if they
    were all there is. With no such class, the split of every row.

    Returns
    -------
    train_idx, val_idx : numpy.ndarray
        Sorted row numbers of the two parts.

    Raises
    ------
    DataError
        When no class has 2 images, or the validation part would miss a class.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    small = np.isin(labels, train_only_classes(labels))
    idx = np.flatnonzero(~small)
    try:
        if len(idx) == 0:
            raise ValueError("no class has 2 images")
        tr, va = train_test_split(idx, test_size=val_fraction, random_state=seed,
                                  stratify=labels[idx])
    except ValueError as exc:
        counts = pd.Series(labels[idx]).value_counts()
        raise DataError(f"cannot split {len(idx)} images of {len(counts)} classes "
                        f"{val_fraction:.0%} / stratified (smallest class: "
                        f"{counts.min() if len(counts) else 0} images): {exc}. The validation "
                        "part needs at least one image per class of 2 or more images: add "
                        "images or raise `cnn.val_fraction`") from None
    if small.any():
        log.warning("%d class(es) with a single image: trained on, not validated",
                    len(train_only_classes(labels)))
    return np.sort(np.concatenate([tr, np.flatnonzero(small)])), np.sort(va)


def _batches(idx: np.ndarray, batch_size: int):
    for start in range(0, len(idx), batch_size):
        yield idx[start:start + batch_size]


def _to_device(images: torch.Tensor, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    batch = images[torch.from_numpy(idx)]
    if device.type == "cuda":
        batch = batch.pin_memory()
    return to_unit(batch.to(device, non_blocking=True))


def evaluate(model: ScratchCNN, images: torch.Tensor, labels: np.ndarray, batch_size: int,
             l2: float, device: str | torch.device = "cpu",
             idx: np.ndarray | None = None) -> tuple[float, float]:
    """(loss, accuracy) in eval mode, as Keras reports ``val_loss`` / ``val_accuracy``: mean
    cross-entropy plus the L2 penalty; ``images`` uint8 (N, 3, S, S) on the CPU."""
    device = resolve_device(device)
    idx = np.arange(len(labels)) if idx is None else np.asarray(idx)
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with torch.inference_mode():
        for b in _batches(idx, batch_size):
            x = _to_device(images, b, device)
            y = y_all[torch.from_numpy(b)].to(device, non_blocking=True)
            logits = model(x)
            total += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
        penalty = model.l2_penalty().double() * l2
    n = max(len(idx), 1)
    return float(total / n + penalty), float(correct) / n


@dataclass
class FitResult:
    """What :func:`fit_cnn` returns: the model (best epoch's weights), the per-epoch history,
    a summary, and the row numbers of the training and validation parts."""

    model: ScratchCNN
    history: pd.DataFrame
    summary: dict
    train_idx: np.ndarray
    val_idx: np.ndarray


def _seeds(seed: int) -> dict[str, int]:
    """Independent streams for weights, dropout, augmentation and shuffling from one seed."""
    state = np.random.SeedSequence(seed).generate_state(4, dtype=np.uint64)
    return dict(zip(("init", "dropout", "augment", "shuffle"), (int(s >> 1) for s in state)))


def fit_cnn(images: torch.Tensor, labels: np.ndarray, n_classes: int, p: CNNParams, seed: int,
            device: str | torch.device = "auto",
            on_epoch: Callable[[dict], None] | None = None,
            progress: bool = True) -> FitResult:
    """Train the CNN from scratch.

    Parameters
    ----------
    images : torch.Tensor
        uint8, (N, 3, S, S), e.g. from :func:`decode_images`.
    labels : numpy.ndarray
        Integer labels in 0 .. n_classes - 1.
    n_classes : int
        Number of classes (the output layer's size).
    p : CNNParams
        Architecture and training settings.
    seed : int
        Seeds the split, the initialisation, dropout, augmentation and shuffling (the caller's
        global random state is left alone).
    device : str or torch.device
        See :func:`resolve_device`.
    on_epoch : callable, optional
        Called after every epoch with that epoch's history row.
    progress : bool
        Show a progress bar.

    Returns
    -------
    FitResult
        The model with the best epoch's weights (Keras ``restore_best_weights``), the
        per-epoch history and a summary.

    Raises
    ------
    ValueError
        When the images or labels have the wrong shape, type or range.
    """
    device = resolve_device(device)
    labels = np.asarray(labels, dtype=np.int64)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (N, 3, S, S), got {images.dtype} "
                         f"{tuple(images.shape)}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    images = images.cpu().contiguous()
    train_idx, val_idx = split_train_val(labels, p.val_fraction, seed)
    seeds = _seeds(seed)
    init_gen = torch.Generator().manual_seed(seeds["init"])
    aug_gen = torch.Generator().manual_seed(seeds["augment"])
    shuffle_rng = np.random.default_rng(seeds["shuffle"])
    y_all = torch.as_tensor(labels)
    cuda = [device.index or 0] if device.type == "cuda" else []
    rows: list[dict] = []
    reductions: list[int] = []
    start = time.perf_counter()
    # dropout draws from the global generators: seed them inside a fork, leaving the caller's
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seeds["dropout"])
        model = init_keras(build_cnn(n_classes, p), init_gen).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=p.learning_rate,
                                     betas=(0.9, 0.999), eps=KERAS_ADAM_EPS)
        scheduler = keras_plateau_scheduler(optimizer, p)
        stopper = KerasEarlyStopping(p.patience, p.min_delta)
        bar = tqdm(range(1, p.epochs + 1), desc="train cnn", unit="epoch",
                   disable=not progress, mininterval=1.0)
        for epoch in bar:
            lr = float(optimizer.param_groups[0]["lr"])
            model.train()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            for b in _batches(shuffle_rng.permutation(train_idx), p.batch_size):
                x = augment_batch(_to_device(images, b, device), p, aug_gen)
                y = y_all[torch.from_numpy(b)].to(device, non_blocking=True)
                logits = model(x)
                loss = F.cross_entropy(logits, y) + p.l2 * model.l2_penalty()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach().double() * len(b)
                correct += (logits.detach().argmax(1) == y).sum()
            val_loss, val_acc = evaluate(model, images, labels, p.batch_size, p.l2, device,
                                         val_idx)
            row = {"epoch": epoch, "train_loss": float(loss_sum) / len(train_idx),
                   "val_loss": val_loss, "train_acc": float(correct) / len(train_idx),
                   "val_acc": val_acc, "lr": lr}
            rows.append(row)
            scheduler.step(val_loss)
            if float(optimizer.param_groups[0]["lr"]) < lr:
                reductions.append(epoch)
            stop = stopper.update(epoch, val_loss, model)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_loss=f"{val_loss:.3f}",
                            val_acc=f"{val_acc:.3f}", refresh=False)
            if on_epoch is not None:
                on_epoch(row)
            if stop:
                break
        stopper.restore(model)
    model.eval()
    seconds = time.perf_counter() - start
    history = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    best = history.loc[history["epoch"] == stopper.best_epoch].iloc[0]
    summary = {
        "epochs_run": len(rows), "best_epoch": int(stopper.best_epoch),
        "best_val_loss": float(best["val_loss"]), "best_val_acc": float(best["val_acc"]),
        "best_train_loss": float(best["train_loss"]), "best_train_acc": float(best["train_acc"]),
        "stopped_early": bool(stopper.stopped_epoch), "lr_reductions": len(reductions),
        "lr_reduction_epochs": reductions,
        "final_lr": float(optimizer.param_groups[0]["lr"]),
        "n_train": len(train_idx), "n_val": len(val_idx), "n_classes": int(n_classes),
        "seed": int(seed),
    }
    log.info("trained %d epochs in %.1f s (%.2f s/epoch) on %s; best epoch %d: val_loss %.4f, "
             "val_acc %.4f", len(rows), seconds, seconds / max(len(rows), 1), device,
             summary["best_epoch"], summary["best_val_loss"], summary["best_val_acc"])
    return FitResult(model, history, summary, train_idx, val_idx)


# --------------------------------------------------------------------------- save / load
def _write_json_exact(path: str | Path, obj: Any) -> None:
    """JSON with floats at full precision (``write_json`` rounds to 6 decimals, which would turn
    ``min_lr`` 1e-7 into 0)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def save_cnn(model: nn.Module, config: dict, out_dir: str | Path) -> None:
    """``weights.npz`` (state_dict tensors -> numpy arrays) and ``config.json``."""
    out_dir = Path(out_dir)
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    save_npz(out_dir / WEIGHTS_FILE, **arrays)
    _write_json_exact(out_dir / CONFIG_FILE, config)


# --------------------------------------------------------------------------- DVCLive
def open_live(live_dir: str | Path):
    """A DVCLive logger that only writes under ``live_dir``: no dvc.yaml, no experiment saved,
    no report."""
    from unittest import mock

    import dvclive.live

    from dvclive import Live

    # No DVC integration is wanted (the stage's outputs are declared in dvc.yaml), so DVCLive is
    # not let near the repository: its inspection fails in a git repository without commits
    # (dvclive 3.49: SCMError "Empty git repo") and runs `dvc init` in a git repo without DVC.
    with mock.patch.object(dvclive.live, "get_dvc_repo", return_value=None):
        return Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False, report=None)


def log_epoch(live, row: dict) -> None:
    """One DVCLive step: train/val loss and accuracy, learning rate."""
    live.log_metric("train/loss", row["train_loss"])
    live.log_metric("val/loss", row["val_loss"])
    live.log_metric("train/accuracy", row["train_acc"])
    live.log_metric("val/accuracy", row["val_acc"])
    live.log_metric("lr", row["lr"])
    live.next_step()


# --------------------------------------------------------------------------- public entry
def train_cnn(root: str | Path, paths: Sequence[str], labels: Sequence[int],
              class_names: Sequence[str], p: CNNParams, seed: int, out_dir: str | Path,
              live_dir: str | Path, device: str | torch.device = "auto", *,
              history_path: str | Path | None = None, summary_path: str | Path | None = None,
              progress: bool = True) -> dict:
    """Decode the images, train the CNN and write the model, its history and the DVCLive logs.

    Parameters
    ----------
    root : str or PathLike
        The image folder.
    paths, labels : sequence
        Image paths relative to ``root`` and their integer labels (0 .. n_classes - 1).
    class_names : sequence of str
        The class of each label, in label order (at least 2).
    p : CNNParams
        Architecture and training settings.
    seed : int
        Seeds the split, the initialisation, dropout, augmentation and shuffling.
    out_dir : str or PathLike
        Receives ``weights.npz`` and ``config.json`` (and, unless other paths are given,
        ``history.csv`` and ``summary.json``).
    live_dir : str or PathLike
        The DVCLive folder (one step per epoch).
    device : str or torch.device
        See :func:`resolve_device`.
    history_path, summary_path : str or PathLike, optional
        Where the per-epoch history (CSV) and the summary (JSON) go.
    progress : bool
        Show progress bars.

    Returns
    -------
    dict
        The summary, plus ``seconds``, ``seconds_per_epoch`` and ``device`` (not written:
        they differ between runs).

    Raises
    ------
    DataError
        Fewer than 2 classes, or a class too small for the stratified split.
    """
    out_dir = Path(out_dir)
    history_path = Path(history_path) if history_path else out_dir / HISTORY_FILE
    summary_path = Path(summary_path) if summary_path else out_dir / SUMMARY_FILE
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = len(class_names)
    if n_classes < 2:
        raise DataError(f"{root}: the CNN needs at least 2 classes, found {n_classes}")
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    device = resolve_device(device)
    images = decode_images(root, paths, p.image_size, progress=progress)
    live = open_live(live_dir)
    start = time.perf_counter()
    try:
        res = fit_cnn(images, labels, n_classes, p, seed, device,
                      on_epoch=lambda row: log_epoch(live, row), progress=progress)
        for key in ("best_epoch", "best_val_loss", "best_val_acc", "epochs_run"):
            live.log_metric(f"best/{key}", res.summary[key], plot=False)
    finally:
        live.end()
    seconds = time.perf_counter() - start
    # a single-image class is trained on but has no validation image: listed by name
    res.summary["train_only_classes"] = [
        {"class": str(class_names[c]), "images": int(np.sum(labels == c)),
         "reason": "fewer than 2 images: the stratified validation split needs 2; trained on, "
                   "not validated"} for c in train_only_classes(labels)]
    save_cnn(res.model, model_config(n_classes, class_names, p, seed), out_dir)
    write_table(history_path, res.history)
    _write_json_exact(summary_path, res.summary)
    return {**res.summary, "seconds": seconds,
            "seconds_per_epoch": seconds / max(res.summary["epochs_run"], 1),
            "device": str(device)}


def index_inputs(index: pd.DataFrame) -> tuple[list[str], np.ndarray, list[str]]:
    """The training inputs from the index table.

    Parameters
    ----------
    index : pandas.DataFrame
        The ``index`` stage's table (columns path, class, label; labels number the classes in
        sorted order).

    Returns
    -------
    paths : list of str
    labels : numpy.ndarray of int64
    class_names : list of str
        The class of each label, in label order.

    Raises
    ------
    DataError
        A column is missing or the labels are not 0 .. n_classes - 1.
    """
    for col in ("path", "class", "label"):
        if col not in index.columns:
            raise DataError(f"index has no `{col}` column: re-run `dvc repro index`")
    names = index.drop_duplicates("label").sort_values("label")
    labels = index["label"].to_numpy(np.int64)
    if list(names["label"]) != list(range(len(names))):
        raise DataError("index labels are not 0..n_classes-1: re-run `dvc repro index`")
    return index["path"].tolist(), labels, names["class"].astype(str).tolist()
