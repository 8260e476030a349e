"""DVC stage `summary`: the gap between unsupervised and supervised, and the headline.

Reads ``metrics/clustering.json`` (the selected model), ``metrics/upper_bound.json`` (the
supervised upper bound) and ``metrics/macro_purity.json`` (K-Means purity per target) and writes
``metrics/summary.json`` (one shallow JSON, see :func:`clusterlens.analysis.summary.build_summary`) and
``plots/summary/gap.png``. With ``metrics/index.json``, ``metrics/reduce.json``,
``metrics/label_issues.json`` and ``metrics/neighbours.json`` it also writes
``metrics/headline.json`` (:func:`clusterlens.analysis.summary.build_headline`): the pipeline's only
declared DVC metrics file, the columns of ``dvc exp show``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from clusterlens.analysis.summary import build_headline, build_summary
from clusterlens.config.base import load_params, parse_stage
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import DataError
from clusterlens.core.io import read_json, write_json
from clusterlens.core.logs import get_logger, log_block
from clusterlens.report.figures.style import matplotlib_setup
from clusterlens.report.figures.summary import plot_gap

log = get_logger("summary")
IN_CLUSTERING = "metrics/clustering.json"
IN_UPPER = "metrics/upper_bound.json"
IN_PURITY = "metrics/macro_purity.json"
IN_HEADLINE = {"index": "metrics/index.json", "reduce": "metrics/reduce.json",
               "label_issues": "metrics/label_issues.json",
               "neighbours": "metrics/neighbours.json"}
OUT_METRICS = "metrics/summary.json"
OUT_HEADLINE = "metrics/headline.json"
OUT_PNG = "plots/summary/gap.png"


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`): nothing; its
    inputs are the other stages' metrics."""


def _read(path) -> dict:
    if not Path(path).is_file():
        raise DataError(f"{path} is missing: run `dvc repro`")
    return read_json(path)


def run(cfg: Params, clustering_path: str = IN_CLUSTERING,
        upper_path: str = IN_UPPER, purity_path: str = IN_PURITY,
        headline_paths: dict | None = None) -> dict:
    other = {**IN_HEADLINE, **(headline_paths or {})}
    log_block(log, "summary", inputs={"clustering": clustering_path, "upper bound": upper_path,
                                      "macro purity": purity_path, **other})
    clustering, upper = _read(clustering_path), _read(upper_path)
    summary = build_summary(clustering, upper, _read(purity_path))
    headline = build_headline(clustering=clustering, upper=upper,
                              **{name: _read(path) for name, path in other.items()})
    summary = write_json(OUT_METRICS, summary)
    headline = write_json(OUT_HEADLINE, headline)
    matplotlib_setup()
    plot_gap(summary, OUT_PNG)
    f = summary["fine"]
    log_block(log, "summary done", outputs={
        OUT_METRICS: f"fine: {f['unsupervised_model']} hungarian "
                     f"{f['unsupervised_hungarian_accuracy']} vs supervised "
                     f"{f['supervised_test_accuracy']}; " + ", ".join(
                         f"{k}: K-Means {v['kmeans_best_purity']} vs supervised "
                         f"{v['supervised_test_accuracy']}" for k, v in summary.items()
                         if k != "fine"),
        OUT_HEADLINE: ", ".join(f"{k} {v}" for k, v in headline.items()),
        "plot": OUT_PNG})
    return summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Unsupervised vs supervised, side by side.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
