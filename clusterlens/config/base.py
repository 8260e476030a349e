"""Strict pydantic models for params sections, with errors that name the dotted key.

Every section model derives from :class:`Section`: unknown keys are refused (with a "did you
mean" hint), values are not coerced between types (``"5"`` is not an integer, ``true`` is not
a number), and every error becomes a :class:`~clusterlens.core.errors.ParamError` that names the
dotted key and the value it got, e.g. ``params.yaml: `kmeans.n_init` must be >= 1, got 0``.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from clusterlens.core.errors import ParamError

S = TypeVar("S", bound="Section")
T = TypeVar("T")


class Section(BaseModel):
    """Base of every params section: strict types, no unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def load_params(path: str | os.PathLike) -> dict:
    """Read a params file into a plain mapping of sections.

    Parameters
    ----------
    path : str or PathLike
        The YAML file (a stage passes ``params.yaml``).

    Returns
    -------
    dict
        The parsed mapping (empty for an empty file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: params file not found (run from the project root)")
    with open(path, encoding="utf-8") as fh:
        params = yaml.safe_load(fh) or {}
    if not isinstance(params, dict):
        raise ParamError("<root>", "must be a mapping of sections")
    return params


def _dotted(prefix: str, loc: tuple) -> str:
    parts = [prefix] if prefix else []
    parts += [str(p) for p in loc]
    return ".".join(parts) if parts else "<root>"


def _message(err: dict, model: type[BaseModel], prefix: str) -> tuple[str, str]:
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    key = _dotted(prefix, loc)
    if kind == "extra_forbidden":
        # the unknown key is the last element of loc; suggest from the fields of its model
        fields = _fields_at(model, loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.6)
        msg = "is not a known key"
        if hint:
            msg += f"; did you mean `{_dotted(prefix, loc[:-1] + (hint[0],))}`?"
        elif fields:
            msg += f" (known: {', '.join(sorted(fields))})"
        return key, msg
    if kind == "missing":
        return key, "is missing"
    text = str(err.get("msg", "is invalid"))
    for lead in ("Value error, ", "Assertion failed, "):
        if text.startswith(lead):
            text = text[len(lead):]
    if text.startswith("Input should be"):
        text = "must be" + text[len("Input should be"):]
    if "input" in err and kind not in ("value_error",):
        return key, f"{text[:1].lower()}{text[1:]}, got {err['input']!r}"
    return key, text


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            ann = current.model_fields[part].annotation
            current = ann if isinstance(ann, type) else None
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def parse_section(params: dict, name: str, model: type[S]) -> S:
    """Validate ``params[name]`` against ``model``.

    Parameters
    ----------
    params : dict
        The whole params mapping (see :func:`load_params`).
    name : str
        The section, e.g. ``"kmeans"``.
    model : type of Section
        The section's model.

    Returns
    -------
    Section
        The validated, immutable section.

    Raises
    ------
    ParamError
        Naming the first offending dotted key (``kmeans.k``) and the value it got; an unknown
        key gets a "did you mean" hint.
    """
    section, errors = _validate(params, name, model)
    if errors:
        raise errors[0]
    return section


def section_errors(params: dict, name: str, model: type[Section]) -> list[ParamError]:
    """Every problem of ``params[name]`` under ``model``, unknown keys first (empty: valid).

    The same rules and messages as :func:`parse_section`, which raises the first of them;
    a whole-file check (:mod:`clusterlens.config.whole`) reports them all at once.
    """
    return _validate(params, name, model)[1]


def _validate(params: dict, name: str, model: type[S]) -> tuple[S | None, list[ParamError]]:
    if name not in params:
        return None, [ParamError(name, "is missing")]
    value = params[name]
    if not isinstance(value, dict):
        return None, [ParamError(name, f"must be a mapping of keys, got {value!r}")]
    try:
        return model.model_validate(value), []
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")
        return None, [ParamError(*_message(err, model, name)) for err in errors]


def grid_value(params: dict, name: str, key: str, model: type[Section], text: str) -> Any:
    """One value of the grid ``name.key`` as a grid stage's command line gives it (dvc.yaml's
    ``--min-cluster-size ${item.mcs}``), typed and checked by the section's own model.

    The section is validated first (so ``hdbscan.min_cluster_size: ["a"]`` is reported as
    that key with that value, not as a command-line error), then ``text`` read as params.yaml
    would hold it (YAML: ``10`` is an integer, ``2.5`` a number) and checked as a one-value
    grid.

    Raises
    ------
    ParamError
        Naming ``name.key``.
    """
    parse_section(params, name, model)
    try:
        value = yaml.safe_load(text) if isinstance(text, str) else text
    except yaml.YAMLError:
        value = text
    one = parse_section({name: {**params[name], key: [value]}}, name, model)
    return getattr(one, key)[0]


def check_value(key: str, value: Any, check, *args) -> Any:
    """Run ``check(value, *args)`` and turn a ``ValueError`` into a :class:`ParamError` naming
    ``key`` (e.g. ``check_value("agglomerative.k", k, rules.integer, 2)``)."""
    try:
        return check(value, *args)
    except ValueError as exc:
        raise ParamError(key, str(exc)) from None


def is_optional(model: type[Section]) -> bool:
    """Whether a section may be absent: every key of ``model`` has a default."""
    try:
        model.model_validate({})
    except ValidationError:
        return False
    return True


def parse_stage(params: dict, spec: type[T]) -> T:
    """Parse, once, every param one stage reads into its frozen dataclass ``spec``.

    Each field of ``spec`` is ``seed: int`` (the top-level seed, :func:`require_seed`) or a
    section model named after its section (``tsne: TSNEParams``). A section field with a
    default is optional: an absent section takes the default (e.g. ``gmm: GMMParams | None =
    None``); so is a section whose every key has a default (``cnn``, ``large_n``), as for the
    whole-file check (:mod:`clusterlens.config.whole`). A stage's ``main`` calls this at
    its door and hands the result to its ``run``, whose signature then shows what the stage
    reads; ``tests/code_deps.py`` checks the keys it reads against the stage's ``params`` in
    dvc.yaml.

    Raises
    ------
    ParamError
        The first bad value, naming its dotted key (sections in field order).
    """
    hints = typing.get_type_hints(spec)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        if f.name == "seed":
            values[f.name] = require_seed(params)
        elif f.name in params or f.default is dataclasses.MISSING:
            model = next(a for a in (typing.get_args(hints[f.name]) or [hints[f.name]])
                         if a is not type(None))  # `X | None` -> X
            if f.name not in params and is_optional(model):
                values[f.name] = model()  # absent, and every key has a default: as the check
            else:
                values[f.name] = parse_section(params, f.name, model)
    return spec(**values)


def require_seed(params: dict) -> int:
    """The top-level ``seed``: an integer >= 0 that every random step takes."""
    seed = params.get("seed", _MISSING)
    if seed is _MISSING:
        raise ParamError("seed", "is missing")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParamError("seed", f"must be an integer >= 0, got {seed!r}")
    return seed


_MISSING = object()
