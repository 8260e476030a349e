"""One check of a whole params file: every section through its own model, every problem at once.

The rules are the section models' (:mod:`clusterlens.config.base` and one module per section);
this module only lists the sections and collects what each model refuses, so that a bad value
anywhere in ``params.yaml`` is reported in seconds, before any heavy work, naming its dotted
key. It also finds what DVC itself would stop on while it reads the pipeline: a clustering grid
that is no list (``kmeans.k: 5``: DVC says "unexpected error - 'Value' object is not iterable"
while it expands dvc.yaml's ``matrix``), and a key that a stage declares under ``params:`` in
dvc.yaml but that params.yaml lacks. ``python -m clusterlens.check`` runs it (see there).
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import yaml

from clusterlens.config.agglomerative import AgglomerativeParams
from clusterlens.config.base import Section, is_optional, require_seed, section_errors
from clusterlens.config.captions import CaptionsParams
from clusterlens.config.cnn import CNNParams
from clusterlens.config.composition import CompositionParams
from clusterlens.config.data import DataParams
from clusterlens.config.dbscan import DBSCANParams
from clusterlens.config.extract import ExtractParams
from clusterlens.config.fusion import FusionParams
from clusterlens.config.gmm import GMMParams
from clusterlens.config.hdbscan import HDBSCANParams
from clusterlens.config.images import ImagesParams
from clusterlens.config.index import IndexParams
from clusterlens.config.kmeans import KMeansParams
from clusterlens.config.label_issues import LabelIssuesParams
from clusterlens.config.large_n import LargeNParams
from clusterlens.config.macro import MacroParams
from clusterlens.config.metrics import MetricsParams
from clusterlens.config.neighbours import NeighboursParams
from clusterlens.config.nmf import NMFParams
from clusterlens.config.reduce import ReduceParams
from clusterlens.config.report import ReportParams
from clusterlens.config.select import SelectParams
from clusterlens.config.tsne import TSNEParams
from clusterlens.config.umap import UMAPParams
from clusterlens.config.upper_bound import UpperBoundParams
from clusterlens.core.errors import ParamError

# Every section of params.yaml and the model its stages parse it with. A section whose every
# key has a default (large_n) may be left out.
SECTIONS: dict[str, type[Section]] = {
    "data": DataParams, "index": IndexParams, "extract": ExtractParams,
    "captions": CaptionsParams, "fusion": FusionParams, "cnn": CNNParams,
    "reduce": ReduceParams, "kmeans": KMeansParams, "agglomerative": AgglomerativeParams,
    "large_n": LargeNParams, "gmm": GMMParams, "dbscan": DBSCANParams,
    "hdbscan": HDBSCANParams, "nmf": NMFParams, "metrics": MetricsParams, "tsne": TSNEParams,
    "umap": UMAPParams,
    "composition": CompositionParams, "macro": MacroParams, "upper_bound": UpperBoundParams,
    "select": SelectParams, "label_issues": LabelIssuesParams, "images": ImagesParams,
    "neighbours": NeighboursParams, "report": ReportParams,
}
TOP_LEVEL = ("seed",)  # plain values outside any section


def _lookup(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


_ABSENT = object()


def params_problems(params: dict, declared: dict[str, list[str]] | None = None
                    ) -> list[ParamError]:
    """Every problem of a whole params mapping, in file order of the sections.

    Parameters
    ----------
    params : dict
        The parsed params file (:func:`clusterlens.config.base.load_params`).
    declared : dict of str to list of str, optional
        Stage name -> the dotted keys it declares under ``params:`` in the pipeline files
        (:func:`declared_params`); each must be present, as DVC refuses to run a stage whose
        declared key is missing even where the model has a default.

    Returns
    -------
    list of ParamError
        Empty when the file is valid; otherwise each error names its dotted key.
    """
    problems: list[ParamError] = []
    known = [*SECTIONS, *TOP_LEVEL]
    for name in params:
        if name not in known:
            hint = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
            problems.append(ParamError(str(name), "is not a known section" + (
                f"; did you mean `{hint[0]}`?" if hint else f" (known: {', '.join(known)})")))
    try:
        require_seed(params)
    except ParamError as exc:
        problems.append(exc)
    order = {name: i for i, name in enumerate(params)}
    for name in sorted(SECTIONS, key=lambda n: order.get(n, len(order))):
        if name not in params and is_optional(SECTIONS[name]):
            continue
        problems += section_errors(params, name, SECTIONS[name])
    reported = {p.key for p in problems}
    for stage, keys in (declared or {}).items():
        for key in keys:
            if _lookup(params, key) is _ABSENT and not any(
                    key == r or key.startswith(r + ".") for r in reported):
                problems.append(ParamError(key, f"is missing (the stage `{stage}` declares it, "
                                           "and DVC needs it in params.yaml)"))
                reported.add(key)
    return problems


def pipeline_files(root: str | os.PathLike = ".") -> list[Path]:
    """The pipeline files of the repository at ``root``: ``dvc.yaml`` and every
    ``<folder>/dvc.yaml`` one level below it (the clustering grid's ``grid/dvc.yaml``), those
    that exist, the top one first."""
    root = Path(root)
    found = [root / "dvc.yaml"] + sorted(root.glob("*/dvc.yaml"))
    return [f for f in found if f.is_file()]


def declared_params(dvc_yaml, params_file: str = "params.yaml") -> dict[str, list[str]]:
    """Stage -> the keys of ``params_file`` it declares under ``params:``.

    Parameters
    ----------
    dvc_yaml : str, PathLike or a list of them
        One pipeline file, or several (:func:`pipeline_files`); an absent file declares
        nothing.
    params_file : str
        The params file whose keys are wanted (entries naming another file are left out).

    Returns
    -------
    dict of str to list of str
        Stage names as DVC addresses them from the top of the repository: ``kmeans`` in the
        first file, ``grid/dvc.yaml:kmeans`` in a file below it.
    """
    files = [dvc_yaml] if isinstance(dvc_yaml, (str, os.PathLike)) else list(dvc_yaml)
    out: dict[str, list[str]] = {}
    for i, file in enumerate(files):
        path = Path(file)
        if not path.is_file():
            continue
        with open(path, encoding="utf-8") as fh:
            stages = (yaml.safe_load(fh) or {}).get("stages") or {}
        prefix = f"{path.parent.name}/{path.name}:" if i else ""
        for stage, spec in stages.items():
            keys: list[str] = []
            for entry in (spec or {}).get("params") or []:
                if isinstance(entry, str):
                    keys.append(entry)
                elif isinstance(entry, dict):  # {other_file.yaml: [keys]}
                    for name, sub in entry.items():
                        if Path(name).name == Path(params_file).name and isinstance(sub, list):
                            keys += [k for k in sub if isinstance(k, str)]
            if keys:
                out[prefix + str(stage)] = keys
    return out


def check_params(params: dict, declared: dict[str, list[str]] | None = None) -> None:
    """Raise :class:`ParamsInvalid` listing every problem of ``params`` (see
    :func:`params_problems`); return quietly when there is none."""
    problems = params_problems(params, declared)
    if problems:
        raise ParamsInvalid(problems)


class ParamsInvalid(ParamError):
    """Several params problems at once; the message has one line per problem."""

    def __init__(self, problems: list[ParamError]):
        self.problems = problems
        ValueError.__init__(self, "\n".join(str(p) for p in problems))
        self.key = problems[0].key

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
