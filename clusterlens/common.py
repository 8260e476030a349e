"""TEMPORARY re-export of the split helpers while modules move to them; removed when unused."""
from clusterlens.cli import run_cli  # noqa: F401
from clusterlens.errors import DataError, ParamError  # noqa: F401
from clusterlens.io import (  # noqa: F401
    atomic_path, load_npy, read_json, read_table, remove_stale_tmp, save_npy, save_npz,
    write_json, write_table,
)
from clusterlens.logs import get_logger, log_block  # noqa: F401
from clusterlens.plotting import matplotlib_setup, save_figure  # noqa: F401


# legacy params lookups (replaced by clusterlens.config section models)
import os
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"


def load_params(path: str | os.PathLike = PARAMS_FILE) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: params file not found (run from the project root)")
    with open(path, encoding="utf-8") as fh:
        params = yaml.safe_load(fh) or {}
    if not isinstance(params, dict):
        raise ParamError("<root>", "must be a mapping of sections")
    return params


_MISSING = object()


def param(params: dict, key: str, default: Any = _MISSING) -> Any:
    """Look up a dotted key such as ``extract.backbone``; a clear error names a missing key."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not _MISSING:
                return default
            raise ParamError(key, "is missing")
        node = node[part]
    return node


def require_int(key: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamError(key, f"must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ParamError(key, f"must be >= {minimum}, got {value}")
    return value


def require_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParamError(key, f"must be true or false, got {value!r}")
    return value


def require_choice(key: str, value: Any, choices: list[str] | tuple[str, ...]) -> str:
    if value not in choices:
        raise ParamError(key, f"must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value

