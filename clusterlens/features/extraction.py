"""Backbone features for a list of images, with a per-image feature store.

Preprocessing, per image (the README documents it so anyone can recompute the features):

1. open with Pillow, apply the EXIF orientation, take the first frame, convert to RGB (alpha is
   composited onto white; 16-bit grayscale is scaled to 8 bits): :func:`clusterlens.data.images.load_rgb`;
2. resize with the backbone's interpolation (Pillow, antialiased):
   ``squash`` -> straight to ``image_size`` x ``image_size`` (aspect ratio not kept);
   ``center_crop`` -> shorter side to ``round(image_size * resize_ratio)`` then a centred
   ``image_size`` square (torchvision's evaluation transform; resize_ratio e.g. 256/224);
3. scale to [0, 1], subtract ``mean`` and divide by ``std`` of the backbone's weights.

Features are float32, one row per image, in the order asked for.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from clusterlens.core.devices import resolve_device
from clusterlens.core.errors import DataError
from clusterlens.data.images import load_rgb, normalize, resize_square
from clusterlens.features.backbones import SCRATCH_CNN, Backbone
from clusterlens.features.precision import (
    autocast_for,
    cast_dtype,
    compute_dtype,
    onednn_fusion,
    precision_label,
    prepare_model,
    resolve_jit,
    split_weights,
)
from clusterlens.features.store import FeatureStore

log = logging.getLogger("clusterlens.extract")
HOLD_ENV = "CLUSTERLENS_HOLD_AFTER_BATCH"
# How often the features computed so far go to the store (see extract_features' on_flush):
# after FLUSH_BATCHES batches or FLUSH_SECONDS seconds, whichever comes first. The seconds bound
# what a kill loses on a CPU (a 64-image batch takes about a second there); the batches bound
# the shard count on a GPU (100 batches of 64 is a shard every few seconds at thousands of
# images/s, each flush one CUDA sync and two file writes).
FLUSH_BATCHES = 100
FLUSH_SECONDS = 10.0


# --------------------------------------------------------------------------- images
def preprocess(img: Image.Image, image_size: int, resize: str, mean, std,
               resize_ratio: float = 256 / 224, interpolation: str = "bilinear") -> torch.Tensor:
    """Prepare one image for a backbone.

    Parameters
    ----------
    img : PIL.Image.Image
        An RGB image.
    image_size : int
        Side of the square input, in pixels.
    resize : {"squash", "center_crop"}
        How the image becomes a square (see :func:`clusterlens.data.images.resize_square`).
    mean, std : sequence of 3 floats
        The backbone's normalisation.
    resize_ratio : float
        Resize size over crop size, for ``center_crop``.
    interpolation : {"bilinear", "bicubic", "nearest"}
        Pillow's resampling filter.

    Returns
    -------
    torch.Tensor
        float32, shape (3, image_size, image_size).
    """
    img = resize_square(img, image_size, resize, resize_ratio, interpolation)
    return torch.from_numpy(normalize(img, mean, std))


class ImageFolderDataset(Dataset):
    """Images under ``root`` (relative ``paths``) preprocessed for ``backbone``."""

    def __init__(self, root, paths, image_size, resize, backbone: Backbone):
        self.root = Path(root)
        self.paths = list(paths)
        self.kw = dict(image_size=image_size, resize=resize, mean=backbone.mean,
                       std=backbone.std, resize_ratio=backbone.resize_ratio,
                       interpolation=backbone.interpolation)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        path = self.root / self.paths[i]
        try:
            img = load_rgb(path)
        except Exception as exc:  # the index said it was fine: the folder changed since
            raise DataError(f"{path}: cannot be read any more ({type(exc).__name__}: {exc}); "
                            "the folder changed after indexing: run `dvc repro` again") from exc
        return preprocess(img, **self.kw)


def resolve_workers(spec, device: torch.device) -> int:
    """DataLoader worker processes for ``extract.workers``.

    ``auto``: on CUDA one decoding process per core (up to 8), so the GPU never waits; on CPU
    none (decoding in worker processes steals the cores the model needs; measured in
    benchmarks/bench_extract.py). An integer is taken as it is.
    """
    if spec == "auto":
        return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    return int(spec)


def input_size(backbone: Backbone, image_size: int | None) -> int:
    """The side the images are fed at: ``image_size``, or the backbone's native size when None.

    The scratch CNN always runs at the size it was trained at (``image_size`` is then ignored,
    with a log line).
    """
    if backbone.name == SCRATCH_CNN and image_size not in (None, backbone.native_size):
        log.info("extract.image_size %s ignored: the scratch CNN runs at the %d px it was "
                 "trained at (cnn.image_size)", image_size, backbone.native_size)
        return backbone.native_size
    return image_size or backbone.native_size


# --------------------------------------------------------------------------- extraction
def _hold_after() -> int | None:
    value = os.environ.get(HOLD_ENV)
    if not value:
        return None
    n = int(value)
    if n < 1:
        raise ValueError(f"{HOLD_ENV} must be an integer >= 1, got {value!r}")
    return n


def _hold(n: int) -> None:
    # tqdm.write clears a progress bar first, so the message is a line of its own
    tqdm.write(f"clusterlens: holding after batch {n}", file=sys.stderr)
    sys.stderr.flush()
    while True:  # until killed
        time.sleep(1)


def extract_features(backbone: Backbone, root, paths, image_size: int, resize: str = "squash",
                     batch_size: int = 64, device: str | torch.device = "auto",
                     workers: int | str = 0, precision: str = "auto", progress: bool = True,
                     jit: bool | str = "auto", on_flush=None, flush_batches: int | None = None,
                     flush_seconds: float | None = None) -> tuple[np.ndarray, dict]:
    """Features of the images at ``root / paths``, in that order, and timing info.

    Every forward pass holds exactly ``batch_size`` images (the last batch is zero-padded), so an
    image's features do not depend on which images share its batch: extracting a subset gives
    the same bytes as extracting everything (what the feature store relies on). Channels-last
    memory format; ``inference_mode``; on CUDA, pinned memory, non-blocking copies both ways
    and one synchronisation at the end (no per-batch host sync).

    Progress that survives a kill: ``on_flush(start, stop, features)`` receives the rows
    ``start:stop`` computed since the previous call (finite float32, checked first) after every
    ``flush_batches`` batches or ``flush_seconds`` seconds, whichever comes first, and once more
    for the rest after the last batch; :func:`features_for_index` appends them to the feature
    store as a shard.

    Test hook: when the environment variable ``CLUSTERLENS_HOLD_AFTER_BATCH`` is an integer
    n >= 1, right after the n-th batch has been processed (and flushed, if that batch completes
    a flush) the process writes the line ``clusterlens: holding after batch <n>`` to stderr,
    flushes it, and blocks until it is killed (an interruption test kills it at that signalled
    point). At that point the rows of the flushes so far have been handed to ``on_flush``, the
    others not; no output has been written. Unset, it has no effect.

    Parameters
    ----------
    backbone : Backbone
        The network and its preprocessing (:func:`clusterlens.features.backbones.build_backbone`).
    root : str or Path
        The image folder; ``paths`` are relative to it.
    paths : sequence of str
        The images, in output order.
    image_size : int
        Side of the square input, in pixels.
    resize : {"squash", "center_crop"}
        How an image becomes a square.
    batch_size : int
        Images per forward pass.
    device : str or torch.device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (see :func:`resolve_device`).
    workers : int or "auto"
        DataLoader worker processes (see :func:`resolve_workers`).
    precision : {"auto", "fp32", "bf16", "bf16_split"}
        See :mod:`clusterlens.features.precision`.
    progress : bool
        Show a progress bar.
    jit : bool or "auto"
        Trace and freeze the model (``auto``: on CPU).
    on_flush : callable, optional
        ``on_flush(start, stop, features)``, see above; None: nothing is handed out.
    flush_batches : int, optional
        Batches between two calls of ``on_flush`` at most (None: :data:`FLUSH_BATCHES`).
    flush_seconds : float, optional
        Seconds between two calls of ``on_flush`` at most, checked after each batch (None:
        :data:`FLUSH_SECONDS`).

    Returns
    -------
    features : numpy.ndarray
        (len(paths), backbone.dim) float32.
    info : dict
        seconds, images_per_s, device, workers, engine (jit / eager / none) and precision.

    Raises
    ------
    DataError
        When an image cannot be read any more.
    RuntimeError
        When the network gives features of the wrong size or non-finite ones.
    """
    device = device if isinstance(device, torch.device) else resolve_device(device)
    workers = resolve_workers(workers, device)
    cuda = device.type == "cuda"
    dataset = ImageFolderDataset(root, paths, image_size, resize, backbone)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=cuda, persistent_workers=False)
    n = len(dataset)
    model, engine = (None, "none") if n == 0 else prepare_model(
        backbone.model, device, (batch_size, 3, image_size, image_size), precision,
        resolve_jit(jit, device))
    out = torch.empty((n, backbone.dim), dtype=torch.float32, pin_memory=cuda)
    hold_after = _hold_after()
    start = time.perf_counter()
    row = flushed = pending = 0
    last_flush = start
    flush_batches = FLUSH_BATCHES if flush_batches is None else flush_batches
    flush_seconds = FLUSH_SECONDS if flush_seconds is None else flush_seconds

    def flush() -> None:
        nonlocal flushed, pending, last_flush
        if cuda:
            torch.cuda.synchronize(device)  # the non-blocking copies into `out` have landed
        chunk = out[flushed:row].numpy()
        _check_finite(chunk, backbone.name)
        on_flush(flushed, row, chunk)
        flushed, pending, last_flush = row, 0, time.perf_counter()

    with torch.inference_mode():
        for done, batch in enumerate(tqdm(loader, desc=f"extract {backbone.name}", unit="batch",
                                          disable=not progress, mininterval=1.0), start=1):
            b = len(batch)
            if b < batch_size:  # pad: same batch shape for every pass
                batch = torch.cat([batch, batch.new_zeros((batch_size - b, *batch.shape[1:]))])
            batch = batch.to(device, non_blocking=True).contiguous(
                memory_format=torch.channels_last)
            with autocast_for(device, precision):
                feats = model(batch)
            feats = feats[:b].float().reshape(b, -1)
            if feats.shape[1] != backbone.dim:
                raise RuntimeError(f"{backbone.name} gave {feats.shape[1]}-D features, "
                                   f"expected {backbone.dim}")
            out[row:row + b].copy_(feats, non_blocking=cuda)
            row += b
            pending += 1
            if on_flush is not None and (pending >= flush_batches or
                                         time.perf_counter() - last_flush >= flush_seconds):
                flush()
            if done == hold_after:
                _hold(done)
    if on_flush is not None and row > flushed:
        flush()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    out = out.numpy()
    _check_finite(out, backbone.name)
    return out, {"seconds": seconds, "images_per_s": n / max(seconds, 1e-9),
                 "device": str(device), "workers": workers, "engine": engine,
                 "precision": precision_label(device, precision)}


def _check_finite(feats: np.ndarray, name: str) -> None:
    if not np.isfinite(feats).all():
        raise RuntimeError(f"{name} produced non-finite features; try extract.precision: fp32")


def extract_metrics(backbone: Backbone, feats: np.ndarray, size: int, device: torch.device, *,
                    resize: str, precision: str, jit: bool | str, batch_size: int) -> dict:
    """What was computed, and how: identical for identical settings and images (no timings).

    Returns
    -------
    dict
        backbone, weights, weights_sha256, dim, images, image_size, resize, device, precision
        (the label of :func:`clusterlens.features.precision.precision_label`), jit (resolved),
        batch_size and threads (torch's intra-op thread count).
    """
    return {
        "backbone": backbone.name,
        "weights": backbone.weights,
        "weights_sha256": backbone.weights_sha256,
        "dim": int(feats.shape[1]),
        "images": int(feats.shape[0]),
        "image_size": int(size),
        "resize": resize,
        "device": str(device),
        "precision": precision_label(device, precision),
        "jit": resolve_jit(jit, device),
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
    }


def store_spec(backbone: Backbone, size: int, device: torch.device, *, resize: str,
               precision: str, jit: bool | str, batch_size: int, seed: int) -> dict:
    """Everything an image's features depend on besides its bytes (the store's key space).

    Parameters
    ----------
    backbone : Backbone
        The network and its preprocessing.
    size : int
        The input side, in pixels.
    device : torch.device
        Where the network runs (its type is part of the key).
    resize, precision, jit, batch_size
        As for :func:`extract_features`.
    seed : int
        Part of the key only for random-init weights (``none``).

    Returns
    -------
    dict
        A JSON-serialisable mapping; :class:`clusterlens.features.store.FeatureStore` hashes it.
    """
    jit = resolve_jit(jit, device)
    spec = {"backbone": backbone.name, "weights": backbone.weights,
            "weights_sha256": backbone.weights_sha256, "image_size": int(size),
            "resize": resize, "interpolation": backbone.interpolation,
            "resize_ratio": backbone.resize_ratio, "mean": list(backbone.mean),
            "std": list(backbone.std), "precision": compute_dtype(device, precision),
            "jit": jit,
            "batch_size": batch_size, "device_type": device.type,
            # oneDNN's results depend on the intra-op thread count in the last bits
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            # not `import torchvision`: its model zoo imports torch._dynamo, about a second of
            # start-up the Lite0 path does not need
            "torch": torch.__version__, "torchvision": version("torchvision")}
    spec.update(backbone.extra)  # e.g. the timm / open_clip version (hub backbones only)
    if backbone.weights.startswith("none"):
        spec["seed"] = seed  # random-init weights come from the seed
    if onednn_fusion(device, jit):
        spec["onednn_fusion"] = True  # oneDNN Graph fusion of the traced model
    if cast_dtype(device, precision) is not None:
        # bfloat16 on CPU: batch norms folded in float32 before the cast (its own key space;
        # float32 keys do not carry it)
        spec["bf16_fold"] = "fp32"
    if split_weights(device, precision):
        spec["bf16_depthwise"] = "hi+lo"  # split_depthwise: its own key space
    return spec


def features_for_index(backbone: Backbone, index, root, size: int, device: torch.device, *,
                       resize: str = "squash", batch_size: int = 64, workers: int | str = 0,
                       precision: str = "auto", jit: bool | str = "auto",
                       store: str | os.PathLike | None = None, seed: int = 0,
                       progress: bool = True, ctx=None) -> tuple[np.ndarray | None, dict]:
    """Features of every row of an image index, in index order, through the feature store.

    Images whose sha256 the store holds under this fingerprint (:func:`store_spec`) are read
    back; only the others go through the network (each distinct image once), and are added to
    the store as they are computed (a shard per flush of :func:`extract_features`), so a run
    that is killed keeps what it extracted up to its last flush and a rerun extracts the rest.

    Parameters
    ----------
    backbone : Backbone
        The network and its preprocessing.
    index : pandas.DataFrame
        With columns ``path`` (relative to ``root``) and ``sha256``.
    root : str or Path
        The image folder.
    size : int
        The input side, in pixels.
    device : torch.device
        Where the network runs.
    resize, batch_size, workers, precision, jit
        As for :func:`extract_features`.
    store : str, PathLike or None
        The feature store folder; None: no store.
    seed : int
        Part of the store key for random-init weights.
    progress : bool
        Show a progress bar.
    ctx : clusterlens.features.sharding.Context, optional
        In a sharded run each rank extracts a contiguous share of the images the store lacks
        and appends it to the store; the writer then reads all of them back (the other ranks
        return None). A store is required then.

    Returns
    -------
    features : numpy.ndarray or None
        (len(index), backbone.dim) float32; None on a rank that does not write.
    info : dict
        The timing info of :func:`extract_features`, plus extracted, from_store and store
        (and world_size in a sharded run).
    """
    shas = index["sha256"].to_numpy(dtype=str)
    uniq, first, inverse = np.unique(shas, return_index=True, return_inverse=True)
    spec = store_spec(backbone, size, device, resize=resize, precision=precision, jit=jit,
                      batch_size=batch_size, seed=seed)
    fs = None if store is None else FeatureStore(store, spec, backbone.dim)
    if fs is not None:
        found, cached = fs.get(uniq)
    else:
        found, cached = np.zeros(len(uniq), dtype=bool), np.empty((0, backbone.dim), np.float32)
    todo = np.flatnonzero(~found)
    log.info("%d images (%d distinct): %d from the feature store, %d to extract", len(index),
             len(uniq), int(found.sum()), len(todo))
    if ctx is not None:
        if fs is None:
            raise ValueError("a sharded run exchanges features through the store: give one")
        ctx.barrier()  # every rank has read the same store state before any rank writes
        todo_all = todo
        todo = np.array_split(todo_all, ctx.world_size)[ctx.rank]
        log.info("rank %d extracts %d of the %d images", ctx.rank, len(todo), len(todo_all))
    paths = index["path"].to_numpy()[first[todo]].tolist()
    todo_shas = uniq[todo]

    def to_store(lo: int, hi: int, chunk: np.ndarray) -> None:
        fs.put(todo_shas[lo:hi], chunk)
        log.debug("feature store: %d of %d images saved", hi, len(todo_shas))

    new, timing = extract_features(backbone, root, paths, size, resize, batch_size, device,
                                   workers, precision, progress, jit,
                                   on_flush=None if fs is None else to_store)
    if ctx is not None:
        ctx.barrier()  # every shard is in the store
        if not ctx.writer:
            return None, timing
        # a fresh instance: this one's index predates the other ranks' shards
        found_all, feats = FeatureStore(store, fs.spec, backbone.dim).get(uniq)
        if not found_all.all():
            raise RuntimeError(f"{int((~found_all).sum())} images missing from the store after "
                               "every rank finished: is extract.store on a file system all "
                               "nodes share?")
        timing.update({"extracted": int(len(todo_all)), "from_store": int(found.sum()),
                       "store": str(fs.dir), "world_size": ctx.world_size})
        return feats[inverse.reshape(-1)], timing
    feats = np.empty((len(uniq), backbone.dim), dtype=np.float32)
    feats[found] = cached
    feats[todo] = new
    timing.update({"extracted": int(len(todo)), "from_store": int(found.sum()),
                   "store": None if fs is None else str(fs.dir)})
    return feats[inverse.reshape(-1)], timing
