"""Which torch device a device setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) names."""
from __future__ import annotations

import torch


def resolve_device(spec: str | torch.device) -> torch.device:
    """The torch device a device setting names.

    Parameters
    ----------
    spec : str or torch.device
        ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; a
        ``torch.device`` is returned as it is.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        For another name, or a CUDA device this machine does not have (the message reads after
        the setting's name, e.g. "extract.device asks for 'cuda' but ...").
    """
    if isinstance(spec, torch.device):
        return spec
    spec = str(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"must be auto, cpu, cuda or cuda:N; got {spec!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"asks for {spec!r} but CUDA is not available on this machine; "
                             "use `auto` or `cpu`")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"asks for {spec!r} but only {torch.cuda.device_count()} CUDA "
                             "device(s) exist")
    elif device.type != "cpu":
        raise ValueError(f"must be auto, cpu, cuda or cuda:N; got {spec!r}")
    return device
