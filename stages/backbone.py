"""DVC stage ``backbone``: prepare the network ``extract`` runs.

The DAG is the same for every backbone: this stage always runs before ``extract``, which depends
on its output folder ``models/backbone``.

- ``extract.backbone: scratch_cnn``: train the CNN of
  :mod:`clusterlens.features.scratch_cnn_training` from scratch on the
  indexed images and their labels (every number a ``cnn.*`` param), writing
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
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clusterlens.config.base import check_value, load_params, parse_stage
from clusterlens.config.cnn import CNNParams
from clusterlens.config.data import DataParams
from clusterlens.config.extract import ExtractParams
from clusterlens.core.cli import run_cli
from clusterlens.core.io import atomic_path, read_table, remove_stale_tmp, write_json, write_table
from clusterlens.core.logs import log_block
from clusterlens.features.backbones import SCRATCH_CNN

log = logging.getLogger("clusterlens.backbone")


INDEX = "data/index.parquet"
OUT_DIR = Path("models/backbone")
LIVE_DIR = Path("dvclive/cnn")
HISTORY = Path("metrics/cnn_history.csv")
SUMMARY = Path("metrics/cnn.json")
# DVCLive's per-metric files (x: step), declared as outputs in dvc.yaml
LIVE_PLOTS = {"train/loss": "loss", "val/loss": "loss", "train/accuracy": "accuracy",
              "val/accuracy": "accuracy", "lr": "lr"}
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "train_acc", "val_acc", "lr"]


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`); of ``extract``,
    only ``backbone``."""
    extract: ExtractParams
    cnn: CNNParams
    seed: int
    data: DataParams


def write_untrained(out_dir: Path = OUT_DIR, live_dir: Path = LIVE_DIR,
                    history: Path = HISTORY, summary: Path = SUMMARY) -> dict:
    """The outputs when nothing is trained: constant bytes, so nothing downstream re-runs."""
    (out_dir / "weights.npz").unlink(missing_ok=True)
    if live_dir.exists():
        shutil.rmtree(live_dir)
    write_json(out_dir / "config.json", {"trained": False})
    write_json(live_dir / "metrics.json", {})
    for name, column in LIVE_PLOTS.items():
        tsv = live_dir / "plots" / "metrics" / f"{name}.tsv"
        tsv.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(tsv) as tmp:
            tmp.write_text(f"step\t{column}\n", encoding="utf-8")
    write_table(history, pd.DataFrame(columns=HISTORY_COLUMNS))
    return write_json(summary, {"trained": False})


def run(cfg: Params, index_path: str = INDEX, out_dir: Path = OUT_DIR,
        live_dir: Path = LIVE_DIR, history: Path = HISTORY, summary: Path = SUMMARY) -> dict:
    """Train the CNN when ``extract.backbone`` is ``scratch_cnn``, else write the placeholder."""
    name = cfg.extract.backbone
    if name != SCRATCH_CNN:
        log_block(log, "backbone", params={"extract.backbone": name},
                  outputs={str(out_dir): "nothing to train (pretrained or raw pixels)"})
        return write_untrained(out_dir, live_dir, history, summary)
    # torch only here: a pretrained backbone's placeholder starts in a fraction of the time
    from clusterlens.core.devices import resolve_device
    from clusterlens.features import scratch_cnn_training

    # every param was validated (by parse_stage) before anything is decoded
    p = cfg.cnn
    seed = cfg.seed
    root = Path(cfg.data.root)
    device = check_value("cnn.device", p.device, resolve_device)
    paths, labels, class_names = scratch_cnn_training.index_inputs(read_table(index_path))
    if live_dir.exists():  # DVCLive appends to an existing folder: start clean
        shutil.rmtree(live_dir)
    remove_stale_tmp(out_dir / scratch_cnn_training.WEIGHTS_FILE,
                     out_dir / scratch_cnn_training.CONFIG_FILE, history, summary)
    log_block(log, "cnn (trained from scratch)",
              inputs={"root": root, "images": len(paths), "classes": len(class_names)},
              params={**{f"cnn.{k}": v for k, v in p.model_dump().items()}, "seed": seed},
              outputs={"model": out_dir, "live": live_dir, "device": device})
    result = scratch_cnn_training.train_cnn(root, paths, labels, class_names, p, seed, out_dir,
                                            live_dir, device, history_path=history,
                                            summary_path=summary)
    log_block(log, "backbone done", outputs={
        str(out_dir): f"CNN trained from scratch, best epoch {result['best_epoch']} of "
                      f"{result['epochs_run']} (val accuracy {result['best_val_acc']:.3f}), "
                      f"{result['seconds_per_epoch']:.1f} s/epoch on {result['device']}",
        str(summary): "training summary", str(history): "per-epoch history",
        str(live_dir): "DVCLive logs"})
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Prepare the feature backbone (train the CNN from "
                                 "scratch when extract.backbone is scratch_cnn).")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--index", default=INDEX)
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params), args.index)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
