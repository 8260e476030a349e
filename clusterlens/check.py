"""``python -m clusterlens.check [params.yaml]``: check a whole params file in seconds.

Every section goes through the model its stages parse it with
(:mod:`clusterlens.config.whole`), and every problem is printed at once, one line each, naming
its dotted key, e.g. ``params.yaml: `kmeans.k` must be a list of integers >= 2, got 5``. Exit
status: 0 when the file is valid, 2 otherwise.

The `index` stage runs the same check before it scans anything, so ``dvc repro`` stops at its
first stage. Run the command yourself (and in CI) before ``dvc repro`` for the mistakes DVC
stops on before any stage runs: a clustering grid that is no list (``kmeans.k: 5``), which DVC
reports as "unexpected error - 'Value' object is not iterable", and a params file that is not
valid YAML. Keys that the pipeline (``dvc.yaml`` beside the params file, and
``grid/dvc.yaml``) declares must be present.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from clusterlens.config.base import load_params
from clusterlens.config.whole import declared_params, params_problems, pipeline_files
from clusterlens.core.errors import ParamError


def check_file(path: str | Path, dvc_yaml: str | Path | None = None) -> list[str]:
    """The problems of the params file ``path``, one message each (empty: valid).

    Parameters
    ----------
    path : str or Path
        The params file.
    dvc_yaml : str, Path or None
        A pipeline file whose declared params must be present; None: the pipeline files
        beside ``path`` (:func:`~clusterlens.config.whole.pipeline_files`; nothing when there
        is none).
    """
    path = Path(path)
    try:
        params = load_params(path)
    except FileNotFoundError as exc:
        return [str(exc)]
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return [f"{path.name}: not valid YAML{line}: {problem}"]
    except ParamError as exc:
        return [str(exc)]
    files = pipeline_files(path.parent) if dvc_yaml is None else [Path(dvc_yaml)]
    return [str(p) for p in params_problems(params, declared_params(files, path.name))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Check every value of a params file at once.")
    ap.add_argument("params", nargs="?", default="params.yaml", help="default: params.yaml")
    ap.add_argument("--dvc-yaml", default=None,
                    help="a pipeline file whose declared params must be present (default: "
                         "dvc.yaml and grid/dvc.yaml beside the params file)")
    args = ap.parse_args(argv)
    problems = check_file(args.params, args.dvc_yaml)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print(f"{args.params}: {len(problems)} problem{'s' * (len(problems) > 1)}; fix "
              "them and run again", file=sys.stderr)
        return 2
    print(f"{args.params}: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
