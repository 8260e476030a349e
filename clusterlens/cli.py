"""Running a stage's ``main()`` as a command: logging on stderr, user errors as one line.

This is the one module every stage entry point imports, so it holds only what a command needs
before anything else runs. Library modules log through plain ``logging.getLogger`` loggers under
``clusterlens``; :func:`configure_logging` gives that tree its stderr handler.
"""
from __future__ import annotations

import logging
import sys

from clusterlens.errors import DataError, ParamError

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


def run_cli(main, argv=None) -> int:
    """Run a stage's ``main(argv)`` with logging configured.

    Returns
    -------
    int
        0 on success; 2 after printing one ``error: ...`` line for a bad param, unusable
        data or a missing file (no traceback: the message says what to change).
    """
    configure_logging()
    try:
        main(argv)
    except (ParamError, DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
