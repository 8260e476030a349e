"""`backbone` stage: prepare the network `extract` runs (SPEC E1-E4).

The DAG is the same for every backbone: this stage always runs before `extract`, which depends on
its output folder ``models/backbone``.

- ``extract.backbone: scratch_cnn`` (seed 000, SPEC E3): train the seed-000 CNN from scratch on
  the indexed images and their labels (``stages.cnn``, every number a ``cnn.*`` param), writing
  ``models/backbone/{weights.npz, config.json}`` (no pickle), the per-epoch history
  ``metrics/cnn_history.csv``, the summary ``metrics/cnn.json`` and the DVCLive logs under
  ``dvclive/cnn`` (train/val loss and accuracy, learning rate; drawn by the top-level plots of
  dvc.yaml). A changed clustering param never retrains: only the index, ``data.root``, the
  ``cnn.*`` params and the seed do.
- any other backbone (pretrained or raw pixels): nothing to train. The stage checks the name and
  writes a constant ``models/backbone/config.json`` (``{"trained": false}``) and empty logs, so
  changing a ``cnn.*`` param then re-runs nothing after it.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from clusterlens.backbones import SCRATCH_CNN, check_backbone_name
from clusterlens.common import (
    get_logger, load_params, log_block, param, run_cli, write_json, write_table,
)

log = get_logger("backbone")
OUT_DIR = Path("models/backbone")
LIVE_DIR = Path("dvclive/cnn")
HISTORY = Path("metrics/cnn_history.csv")
SUMMARY = Path("metrics/cnn.json")
# DVCLive's per-metric files (x: step), declared as outputs in dvc.yaml
LIVE_PLOTS = {"train/loss": "loss", "val/loss": "loss", "train/accuracy": "accuracy",
              "val/accuracy": "accuracy", "lr": "lr"}
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "train_acc", "val_acc", "lr"]


def write_untrained(out_dir: Path = OUT_DIR, live_dir: Path = LIVE_DIR,
                    history: Path = HISTORY, summary: Path = SUMMARY) -> dict:
    """The outputs when nothing is trained: constant bytes, so nothing downstream re-runs."""
    import pandas as pd

    for stale in (out_dir / "weights.npz",):
        stale.unlink(missing_ok=True)
    if live_dir.exists():
        shutil.rmtree(live_dir)
    write_json(out_dir / "config.json", {"trained": False})
    write_json(live_dir / "metrics.json", {})
    for name, column in LIVE_PLOTS.items():
        write_table_tsv(live_dir / "plots" / "metrics" / f"{name}.tsv", ["step", column])
    write_table(history, pd.DataFrame(columns=HISTORY_COLUMNS))
    return write_json(summary, {"trained": False})


def write_table_tsv(path: Path, columns: list[str]) -> None:
    from clusterlens.common import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text("\t".join(columns) + "\n", encoding="utf-8")


def run(params: dict, index_path: str = "data/index.parquet", out_dir: Path = OUT_DIR,
        live_dir: Path = LIVE_DIR, history: Path = HISTORY, summary: Path = SUMMARY) -> dict:
    name = check_backbone_name(param(params, "extract.backbone"))
    if name != SCRATCH_CNN:
        log_block(log, "backbone", params={"extract.backbone": name},
                  outputs={str(out_dir): "nothing to train (pretrained or raw pixels)"})
        return write_untrained(out_dir, live_dir, history, summary)
    from clusterlens import cnn

    cnn.cnn_params(params)  # validate every cnn.* key before decoding anything
    if live_dir.exists():  # DVCLive appends to an existing folder: start clean
        shutil.rmtree(live_dir)
    result = cnn.run(params, index_path, str(out_dir), str(live_dir), str(history), str(summary))
    log_block(log, "backbone done", outputs={
        str(out_dir): f"seed-000 CNN, best epoch {result['best_epoch']} of "
                      f"{result['epochs_run']} (val accuracy {result['best_val_acc']:.3f}), "
                      f"{result['seconds_per_epoch']:.1f} s/epoch on {result['device']}",
        str(summary): "training summary", str(history): "per-epoch history",
        str(live_dir): "DVCLive logs"})
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Prepare the feature backbone (train the seed-000 "
                                 "CNN when extract.backbone is scratch_cnn).")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--index", default="data/index.parquet")
    args = ap.parse_args(argv)
    run(load_params(args.params), args.index)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
