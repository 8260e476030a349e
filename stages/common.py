"""Helpers shared by every stage: params, validation errors, atomic writes, logging."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml

PARAMS_FILE = "params.yaml"


class ParamError(ValueError):
    """A value in params.yaml is missing or invalid; the message names the key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"params.yaml: `{key}` {message}")


class DataError(ValueError):
    """The input data cannot be used; the message names the path and what to do."""


# --------------------------------------------------------------------------- params
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


# --------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    A crash or an interruption leaves the previous file (or nothing) in place, never a half
    written one. Works for files and directories.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix + ".tmp",
        dir=path.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def remove_stale_tmp(*paths: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that ``atomic_path`` leaves beside ``paths`` when its process is
    killed outright (SIGKILL, power loss) mid-write; returns what was removed.

    Call it at the start of a stage, for that stage's own outputs: DVC runs one stage of a
    repository at a time, so no live writer owns them. They are never outputs themselves (DVC
    records only the final names), this only tidies the folders.
    """
    import glob

    removed = []
    for path in map(Path, paths):
        if not path.parent.is_dir():
            continue
        for tmp in sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp")):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        return round(obj, 6)
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Any:
    """Write JSON atomically; floats rounded to 6 decimals, NaN/inf as null. Returns what was
    written (as read back)."""
    clean = _jsonable(obj)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")
    return clean


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def write_table(path: str | os.PathLike, df) -> None:
    """Write a pandas DataFrame as parquet or csv (by suffix), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            raise ValueError(f"{path}: unsupported table format (use .parquet or .csv)")


def read_table(path: str | os.PathLike):
    import pandas as pd

    path = Path(path)
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        # Fixed metadata keeps PNG bytes identical across runs.
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight",
                    metadata={"Software": None})
    plt.close(fig)


# --------------------------------------------------------------------------- logging
def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(f"clusterlens.{name}")
    if not logging.getLogger("clusterlens").handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s",
                                               "%H:%M:%S"))
        root = logging.getLogger("clusterlens")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    return logger


def log_block(logger: logging.Logger, title: str, **sections: dict) -> None:
    """Log one readable block: e.g. inputs=..., params=..., outputs=..."""
    lines = [f"== {title}"]
    for section, items in sections.items():
        lines.append(f"  {section}:")
        for key, value in items.items():
            lines.append(f"    {key}: {value}")
    logger.info("\n".join(lines))


def run_cli(main, argv=None) -> int:
    """Run a stage's main(); turn known user errors into one clear line and exit code 2."""
    try:
        main(argv)
    except (ParamError, DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def matplotlib_setup() -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "clusterlens"
