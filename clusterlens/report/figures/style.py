"""Matplotlib set-up shared by every figure: a headless backend and byte-stable PNGs."""
from __future__ import annotations

import os

from clusterlens.core.io import atomic_path


def matplotlib_setup() -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "clusterlens"


def plot_notice(text: str, path: str | os.PathLike) -> None:
    """A small figure that only says ``text``: the output of a view that is off."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    save_figure(fig, path)


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        # Fixed metadata keeps PNG bytes identical across runs.
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight",
                    metadata={"Software": None})
    plt.close(fig)
