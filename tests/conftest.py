"""Shared fixtures: small generated image trees, and paths to the shared real data."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"
CIFAR = SHARED / "datasets" / "cifar10-test"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet.pth"

if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

# A colour per class: generated images of a class share a hue and a stripe direction.
CLASS_STYLES = [((220, 40, 40), 0), ((40, 200, 60), 1), ((40, 60, 220), 2),
                ((230, 200, 30), 3), ((180, 40, 200), 0), ((30, 200, 200), 1)]


def make_image(cls_i: int, rng: np.random.Generator, size=(40, 32)) -> Image.Image:
    color, stripe = CLASS_STYLES[cls_i % len(CLASS_STYLES)]
    w, h = size
    arr = np.empty((h, w, 3), dtype=np.float32)
    arr[:] = color
    yy, xx = np.mgrid[0:h, 0:w]
    pattern = [(xx // 4) % 2, (yy // 4) % 2, ((xx + yy) // 4) % 2, ((xx - yy) // 4) % 2][stripe]
    arr *= (0.6 + 0.4 * pattern)[..., None]
    arr += rng.normal(0, 12, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")


def make_tree(root: Path, counts: dict[str, int], seed: int = 0, fmt: str = "png",
              size=(40, 32)) -> Path:
    """root/<class>/<i>.<fmt> with class-specific colour and stripes (+ noise)."""
    rng = np.random.default_rng(seed)
    for ci, (cls, n) in enumerate(counts.items()):
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            make_image(ci, rng, size).save(d / f"{i:03d}.{fmt}")
    return root


@pytest.fixture
def image_tree(tmp_path) -> Path:
    return make_tree(tmp_path / "images", {"apple": 6, "berry": 5, "cherry": 4})


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run a stage's run() in an empty working directory (outputs land under tmp_path/work)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


os.environ.setdefault("MPLBACKEND", "Agg")
