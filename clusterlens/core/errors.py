"""The two kinds of user error: a bad param value and unusable input data."""
from __future__ import annotations


class ParamError(ValueError):
    """A value in params.yaml is missing or invalid; the message names the key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"params.yaml: `{key}` {message}")


class DataError(ValueError):
    """The input data cannot be used; the message names the path and what to do."""


def check_rows(name: str, n_rows: int, index_path: str, n_index: int) -> None:
    """The one guard for an array or table that holds a row per image of the index.

    Parameters
    ----------
    name : str
        What was read, e.g. its path (``data/pca.npy``) or a description.
    n_rows : int
        Its number of rows.
    index_path : str
        The index it must match (``data/index.parquet``).
    n_index : int
        The index's number of rows.

    Raises
    ------
    DataError
        ``<name> has <n> rows but <index> has <m>: re-run `dvc repro```, when they differ.
    """
    if n_rows != n_index:
        raise DataError(f"{name} has {n_rows} rows but {index_path} has {n_index}: "
                        "re-run `dvc repro`")
