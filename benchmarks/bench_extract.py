"""Feature-extraction throughput: a plain decode-then-run loop vs the `extract` stage.

    python -m benchmarks.bench_extract                     # 1,024 CIFAR-10 images, 224 px, Lite0
    python -m benchmarks.bench_extract --backbone mobilenet_v2 \\
        --weights ../shared/weights/mobilenet_v2_imagenet.pth --repeats 3

Baseline (a plain loop): one process, for each batch open + resize + normalise every image
with PIL/numpy, stack, run the model in float32 (contiguous memory, ``torch.no_grad``).
Measured against it, in the same process on the same images: the stage's
``extract_features`` in float32 (channels-last, ``inference_mode``, fixed-size batches, traced,
frozen and run with oneDNN Graph fusion), with ``precision="bf16"`` and with
``precision="bf16_split"`` (depthwise weights in two bfloat16 parts); per-image cosine
similarity of each to the baseline's features (minimum and mean). ``setup`` is the stage's
one-off cost per call (batch-norm fold, trace, freeze, the two fusion warm-up passes): the
whole-call ratio approaches the loop-only ratio as the folder grows.
Also the CPU decode + preprocess rate of one process, i.e. what one DataLoader worker delivers
(a GPU extracting G images/s needs about G / that rate workers). Runs alternate and the median
of ``--repeats`` is reported. Prints a table; the ratio column is baseline time / time.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from clusterlens.data.images import load_rgb
from clusterlens.features.backbones import build_backbone
from clusterlens.features.extraction import extract_features, preprocess

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-test"


def cifar_paths(n: int) -> tuple[Path, list[str]]:
    classes = sorted(p for p in CIFAR.iterdir() if p.is_dir())
    per = -(-n // len(classes))
    paths = [f.relative_to(CIFAR).as_posix() for c in classes
             for f in sorted(c.glob("*.jpg"))[:per]]
    return CIFAR, paths[:n]


def decode(bb, root, paths, size, resize):
    return [preprocess(load_rgb(root / p), size, resize, bb.mean, bb.std, bb.resize_ratio,
                       bb.interpolation) for p in paths]


def baseline(bb, root, paths, size, resize, batch_size) -> np.ndarray:
    """The plain loop: decode a batch in this process, then run it, float32."""
    model = bb.model.to(memory_format=torch.contiguous_format).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(paths), batch_size):
            x = torch.stack(decode(bb, root, paths[i:i + batch_size], size, resize))
            out.append(model(x).reshape(len(x), -1).numpy())
    return np.concatenate(out)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image cosine similarity, in float64."""
    a = a.astype(np.float64) / np.linalg.norm(a, axis=1, keepdims=True)
    b = b.astype(np.float64) / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--resize", default="squash")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--weights", default="DEFAULT")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if not CIFAR.is_dir():
        print(f"{CIFAR} not found: this benchmark needs the shared CIFAR-10 folder")
        return 2
    root, paths = cifar_paths(args.images)
    bb = build_backbone(args.backbone, args.weights, args.size)
    n = len(paths)
    print(f"# {args.backbone} ({bb.weights}), {n} CIFAR-10 images at {args.size} px, batch "
          f"{args.batch_size}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    variants = (("stage fp32", "fp32"), ("stage bf16", "bf16"), ("stage bf16_split", "bf16_split"))
    runs = {"baseline": [], **{name: [] for name, _ in variants}, "decode only": []}
    loops = {name: [] for name, _ in variants}  # the stage's own timing: loop only, after
    # folding, tracing, freezing and warming up the model (a one-off cost per call, 1-2 s)
    feats = {}
    kw = dict(batch_size=args.batch_size, device="cpu", workers=0, progress=False)
    # warm-up (first-call allocations, oneDNN kernel selection)
    baseline(bb, root, paths[:args.batch_size], args.size, args.resize, args.batch_size)
    for _, prec in variants:
        extract_features(bb, root, paths[:args.batch_size], args.size, args.resize,
                         precision=prec, **kw)
    for _ in range(args.repeats):
        t, feats["baseline"] = timed(lambda: baseline(bb, root, paths, args.size, args.resize,
                                                      args.batch_size))
        runs["baseline"].append(t)
        for name, prec in variants:
            t, (feats[name], info) = timed(lambda prec=prec: extract_features(
                bb, root, paths, args.size, args.resize, precision=prec, **kw))
            runs[name].append(t)
            loops[name].append(info["seconds"])
        t, _ = timed(lambda: decode(bb, root, paths, args.size, args.resize))
        runs["decode only"].append(t)
    base = statistics.median(runs["baseline"])
    print(f"{'what':<18}{'images':>8}{'seconds':>10}{'images/s':>10}{'ratio':>8}"
          f"{'setup s':>9}{'loop-only ratio':>17}{'min cosine':>12}{'mean cosine':>13}")
    for name, ts in runs.items():
        t = statistics.median(ts)
        if name in feats:
            c = cosines(feats["baseline"], feats[name])
            cmin, cmean = f"{c.min():.6f}", f"{c.mean():.6f}"
        else:
            cmin = cmean = "-"
        loop = f"{base / statistics.median(loops[name]):.2f}" if name in loops else "-"
        setup = (f"{statistics.median([a - b for a, b in zip(ts, loops[name])]):.2f}"
                 if name in loops else "-")
        print(f"{name:<18}{n:>8}{t:>10.2f}{n / t:>10.1f}{base / t:>8.2f}{setup:>9}{loop:>17}"
              f"{cmin:>12}{cmean:>13}")
    rate = n / statistics.median(runs["decode only"])
    print(f"# one process decodes + preprocesses {rate:.0f} images/s at {args.size} px: a GPU "
          f"running the model at G images/s needs about G / {rate:.0f} DataLoader workers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
