"""DVC stage ``digits``: write the embedded demo data set, a class-per-folder PNG tree.

The 1,797 8x8 handwritten digits that ship inside scikit-learn go to ``data/digits/<digit>/``
(see :mod:`clusterlens.data.digits`). Nothing is downloaded; the stage has no params.
"""
from __future__ import annotations

import argparse

from clusterlens.core.cli import run_cli
from clusterlens.core.logs import get_logger, log_block
from clusterlens.data.digits import write_digits

log = get_logger("digits")

OUT_DIGITS = "data/digits"


def run(out_dir: str = OUT_DIGITS) -> dict:
    """Write the digits tree into ``out_dir``; returns ``{"images": count}``."""
    n = write_digits(out_dir)
    log_block(log, "digits", inputs={"source": "sklearn.datasets.load_digits"},
              outputs={out_dir: f"{n} PNG images in 10 class folders"})
    return {"images": n}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Write the demo data set (scikit-learn's digits).")
    ap.add_argument("--out", default=OUT_DIGITS, help=f"output folder (default: {OUT_DIGITS})")
    args = ap.parse_args(argv)
    run(args.out)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
