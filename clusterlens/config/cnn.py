"""The ``cnn`` section: the CNN the ``backbone`` stage trains from scratch.

The defaults reproduce the reference architecture and training recipe described in
``clusterlens.features.scratch_cnn_training`` (a small Keras-style CNN), except ``image_size``: 32
instead of 224, so that
training runs on a CPU.
"""
from __future__ import annotations

import math
import re
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from clusterlens.config.base import Section

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")

# float settings: (lower bound, upper bound, lower bound excluded, upper bound excluded)
FLOAT_BOUNDS: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "learning_rate": (0, None, True, False),
    "l2": (0, None, False, False),
    "dropout_conv": (0, 1, False, True),
    "dropout_dense": (0, 1, False, True),
    "batchnorm_momentum": (0, 1, False, True),
    "val_fraction": (0, 1, True, True),
    "min_delta": (0, None, False, False),
    "lr_factor": (0, 1, True, True),
    "lr_min_delta": (0, None, False, False),
    "min_lr": (0, None, False, False),
    "rotation": (0, 1, False, False),
    "zoom": (0, 1, False, True),
    "translate": (0, 1, False, True),
}


def number(value: Any, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real number within bounds, as a float.

    Strings such as ``5e-4`` (which YAML 1.1 readers keep as strings when there is no dot) are
    accepted when they parse as a finite float; booleans are not numbers.

    Raises
    ------
    ValueError
        When the value is not a finite number within the bounds.
    """
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"must be finite, got {value!r}")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ValueError(f"must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise ValueError(f"must be {'<' if hi_open else '<='} {hi}, got {value}")
    return value


class CNNParams(Section):
    """``cnn.*``: architecture, training and augmentation of the from-scratch CNN.

    Every key has a default (the reference recipe). Integers are >= 1 (``image_size`` at least
    ``2 ** len(filters)``, one halving per block); rates and fractions lie in their natural
    ranges; ``device`` is auto, cpu, cuda or cuda:N.
    """

    image_size: int = Field(32, ge=1)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(50, ge=1)
    learning_rate: float = 5e-4
    l2: float = 1e-4
    filters: tuple[int, ...] = (32, 64, 128)
    embedding_dim: int = Field(256, ge=1)
    dropout_conv: float = 0.25
    dropout_dense: float = 0.5
    batchnorm_momentum: float = 0.99
    val_fraction: float = 0.2
    patience: int = Field(5, ge=1)
    min_delta: float = 0.0
    lr_factor: float = 0.5
    lr_patience: int = Field(3, ge=1)
    lr_min_delta: float = 1e-4
    min_lr: float = 1e-7
    rotation: float = 0.15
    zoom: float = 0.15
    translate: float = 0.1
    flip: bool = True
    device: str = "auto"

    @field_validator(*FLOAT_BOUNDS, mode="before")
    @classmethod
    def _float(cls, value: Any, info) -> float:
        return number(value, *FLOAT_BOUNDS[info.field_name])

    @field_validator("filters", mode="before")
    @classmethod
    def _filters(cls, value: Any) -> tuple[int, ...]:
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError("must be a non-empty list of filter counts such as [32, 64, 128], "
                             f"got {value!r}")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"must hold integers >= 1, got {v!r}")
        return tuple(value)

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, value: Any) -> str:
        if not isinstance(value, str) or not DEVICE_PATTERN.fullmatch(value):
            raise ValueError(f"must be {DEVICE_CHOICES}; got {value!r}")
        return value

    @model_validator(mode="after")
    def _image_size_fits_the_blocks(self) -> CNNParams:
        smallest = 2 ** len(self.filters)  # every block halves the image
        if self.image_size < smallest:
            # a ValidationError keeps its location, so the error names `cnn.image_size`
            raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
                type=PydanticCustomError("value_error", "must be >= {smallest}, got {value}",
                                         {"smallest": smallest, "value": self.image_size}),
                loc=("image_size",), input=self.image_size)])
        return self
