"""Running a stage's ``main()`` as a command: user errors become one line and exit code 2."""
from __future__ import annotations

import sys

from clusterlens.errors import DataError, ParamError


def run_cli(main, argv=None) -> int:
    """Run a stage's main(); turn known user errors into one clear line and exit code 2."""
    try:
        main(argv)
    except (ParamError, DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
