"""A feature network's description (:class:`Backbone`) and safe weight loading: every weights
file is read as tensors only (``torch.load(weights_only=True)``, or safetensors), never
unpickled, and loaded strictly (:func:`load_into`)."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from clusterlens.core.errors import ParamError

if TYPE_CHECKING:  # annotations only
    from torch import nn


@dataclass
class Backbone:
    """A feature network and the preprocessing its weights expect."""

    name: str
    model: nn.Module  # maps (B, 3, S, S) -> (B, dim)
    dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int  # crop size the weights were trained at
    resize_ratio: float  # resize_size / crop_size, used by resize mode `center_crop`
    interpolation: str  # "bilinear" or "bicubic"
    weights: str  # human-readable description of the weights
    weights_sha256: str = ""
    extra: dict = field(default_factory=dict)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state_dict_file(path: str | Path, what: str = "", hint: str = "") -> dict:
    """Load a state_dict safely (``weights_only=True``: tensors only, nothing executed).

    Parameters
    ----------
    path : str or Path
        The weights file.
    what : str
        How the error names the file (default: the path itself).
    hint : str
        What the error suggests when the file is no plain state_dict.

    Raises
    ------
    ParamError
        Naming ``extract.weights`` and the file: missing, not loadable without unpickling
        arbitrary objects (a pickle that would run code is refused, never executed), or no
        mapping of names to tensors. A ``.safetensors`` file is read with safetensors.
    """
    import torch

    path = Path(path)
    what = what or repr(str(path))
    if not path.is_file():
        raise ParamError("extract.weights", f"file not found: {str(path)!r} (use DEFAULT, "
                         "none, a torchvision weights name, or a path to a state_dict file)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(path, device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in str(exc).splitlines()]
        if type(exc).__name__ == "UnpicklingError":  # anything but tensors and containers
            why = next((ln for ln in lines if "global" in ln.lower()), lines[0] if lines else "")
            why = why.split(". Please")[0].removeprefix("WeightsUnpickler error: ")
            raise ParamError("extract.weights", f"{what} is not a loadable PyTorch state_dict: "
                             "it holds objects other than tensors, so it was refused and not "
                             f"unpickled ({why[:200]}){hint}") from None
        first = (lines or [""])[0][:200]
        raise ParamError("extract.weights", f"{what} is not a loadable PyTorch state_dict; it "
                         f"was not unpickled ({type(exc).__name__}: {first}){hint}") from None
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ParamError("extract.weights", f"{what} does not hold a state_dict "
                         f"(a mapping of parameter names to tensors){hint}")
    return obj


FIT_HINT = ("; set `extract.backbone` to the model these weights were saved from, or give a "
            "state_dict of this backbone")


def load_into(model, state_dict: dict, source: str, backbone: str) -> None:
    """Strictly load weights; a mismatch is a clear error naming both sides."""
    try:
        result = model.load_state_dict(state_dict, strict=False)
        missing, unexpected = result.missing_keys, result.unexpected_keys
    except RuntimeError as exc:  # shape mismatches
        first = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln][:3]
        raise ParamError("extract.weights", f"{source} does not fit backbone {backbone!r}: "
                         + "; ".join(first or [str(exc)[:300]]) + FIT_HINT) from None
    if missing or unexpected:
        raise ParamError("extract.weights", f"{source} does not fit backbone {backbone!r}: "
                         f"{len(missing)} missing keys (e.g. {missing[:3]}), "
                         f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})" + FIT_HINT)
