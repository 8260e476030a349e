"""Figures of the supervised upper bound: accuracy per configuration, per class, and on the
macro-categories."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from clusterlens.report.figures.style import save_figure


def plot_configs(table: pd.DataFrame, best: str, path: str | os.PathLike) -> None:
    """Train and test accuracy of every configuration (bars), the best one marked."""
    import matplotlib.pyplot as plt

    n = len(table)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * n + 2), 4.5))
    x = np.arange(n)
    ax.bar(x - 0.2, table["train_accuracy"], 0.4, label="train", color="#4C72B0")
    ax.bar(x + 0.2, table["test_accuracy"], 0.4, label="test", color="#DD8452")
    for i, v in enumerate(table["test_accuracy"]):
        ax.text(i + 0.2, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
    ax.set_xticks(x, [f"{c}\n(best)" if c == best else c for c in table["config"]], fontsize=8)
    ax.set_ylim(0, 1.18)
    ax.set_xlabel("logistic regression configuration")
    ax.set_ylabel("accuracy")
    ax.set_title("Supervised upper bound: train and test accuracy per configuration")
    ax.legend(loc="upper center", ncol=2)
    save_figure(fig, path)


def plot_per_class(df: pd.DataFrame, config: str, path: str | os.PathLike) -> None:
    """The distribution of per-class test accuracy; with 40 classes or fewer, one bar each."""
    import matplotlib.pyplot as plt

    acc = df["accuracy"].dropna()
    with_bars = len(df) <= 40
    fig, axes = plt.subplots(1, 2 if with_bars else 1, squeeze=False,
                             figsize=(13 if with_bars else 7, max(4.5, 0.22 * len(df) + 1.5)
                                      if with_bars else 4.5))
    ax = axes[0, 0]
    ax.hist(acc, bins=np.linspace(0, 1, 21), color="#4C72B0", edgecolor="white")
    ax.axvline(acc.mean(), color="#C44E52", ls="--", label=f"mean {acc.mean():.3f}")
    ax.axvline(acc.median(), color="#55A868", ls=":", label=f"median {acc.median():.3f}")
    ax.set_xlabel("per-class test accuracy")
    ax.set_ylabel("number of classes")
    ax.set_title(f"Distribution of per-class accuracy ({config}, {len(acc)} classes)")
    ax.legend()
    if with_bars:
        ax = axes[0, 1]
        ordered = df.iloc[::-1]
        ax.barh(range(len(ordered)), ordered["accuracy"].fillna(0), color="#DD8452")
        ax.set_yticks(range(len(ordered)),
                      [f"{c} (n={t})" for c, t in zip(ordered["class"], ordered["test_count"])],
                      fontsize=8)
        ax.set_xlim(0, 1.05)
        ax.set_xlabel("test accuracy")
        ax.set_ylabel("class (test images)")
        ax.set_title("Per-class test accuracy")
    save_figure(fig, path)


def plot_macro(table: pd.DataFrame, fine_acc: float, n_classes: int, config: str,
               path: str | os.PathLike) -> None:
    """Test accuracy by number of target categories (macro cuts, then the fine classes), with
    the random and majority-group baselines."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    mac = table[table["target"] != "fine"]
    xs = list(mac["groups"]) + [n_classes]
    ax.plot(xs, list(mac["test_accuracy"]) + [fine_acc], marker="o", color="#4C72B0",
            label="test accuracy (macro groups, then fine classes)")
    ax.plot(xs, [1.0 / x for x in xs], marker="s", ls="--", color="0.4",
            label="random baseline 1/groups")
    ax.plot(xs, list(mac["majority_baseline"]) + [float(table["majority_baseline"].iloc[-1])],
            marker="^", ls=":", color="#55A868", label="majority-group baseline")
    ax.axhline(fine_acc, color="#C44E52", ls="-.", lw=1,
               label=f"fine-grained ({n_classes} classes): {fine_acc:.3f}")
    ax.set_xscale("log")
    ax.set_xticks(sorted(set(xs)), [str(x) for x in sorted(set(xs))])
    ax.minorticks_off()
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("number of target categories (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Logistic regression on data-driven macro-categories ({config})")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_skipped(title: str, reason: str, path: str | os.PathLike) -> None:
    """A figure that only says why there is nothing to show (the bound could not be fitted)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 1.8))
    ax.axis("off")
    ax.text(0.5, 0.5, f"Not computed: {reason}", ha="center", va="center", fontsize=10,
            wrap=True)
    ax.set_title(title)
    save_figure(fig, path)
