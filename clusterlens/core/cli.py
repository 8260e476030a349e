"""Running a stage's ``main()`` as a command: logging on stderr, user errors as one line.

This is the one module every stage entry point imports, so it holds only what a command needs
before anything else runs. Library modules log through plain ``logging.getLogger`` loggers under
``clusterlens``; :func:`configure_logging` gives that tree its stderr handler.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from clusterlens.core.errors import DataError, ParamError

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def configure_logging(level: int = logging.INFO) -> logging.Logger:
    """Give the ``clusterlens`` logger tree one stderr handler (once) and ``level``.

    Returns
    -------
    logging.Logger
        The ``clusterlens`` logger.
    """
    root = logging.getLogger("clusterlens")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(level)
    return root


def stage_name(argv=None) -> str:
    """What runs, as a user would name it: ``extract``, or ``cluster kmeans --k 10`` for a grid
    point (the stage module run with ``python -m stages.<name>``, and its arguments)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    dotted = spec.name if spec is not None and spec.name else Path(sys.argv[0]).stem
    parts = [p for p in dotted.split(".") if p != "__main__"] or ["stage"]
    name = parts[-1]
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join([name, *map(str, args)])


def run_cli(main, argv=None) -> int:
    """Run a stage's ``main(argv)`` with logging configured.

    Returns
    -------
    int
        0 on success; 2 after printing an ``error: ...`` line for a bad param (one per
        problem when several are found at once), unusable data or a missing file (no
        traceback: the message says what to change); 130 after one line for Ctrl-C
        (``KeyboardInterrupt``): outputs are written atomically, so nothing half-written is
        kept and running ``dvc repro`` again continues.
    """
    configure_logging()
    try:
        main(argv)
    except (ParamError, DataError, FileNotFoundError) as exc:
        for line in str(exc).splitlines() or [""]:  # several at once: one line each
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"clusterlens: {stage_name(argv)} interrupted (Ctrl-C); nothing half-written was "
              "kept; run `dvc repro` again to continue", file=sys.stderr)
        return 130
    return 0
