"""The ``extract`` section: which backbone turns images into features, and how it runs."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import ValidationInfo, field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import choice, integer
from clusterlens.data.images import RESIZE_MODES
from clusterlens.features.backbones import unknown_backbone

# extract.precision (clusterlens.features.precision: what each means on CPU and CUDA); here, not there,
# so that checking params imports no torch
PRECISIONS = ("auto", "fp32", "bf16", "bf16_split")


class ExtractParams(Section):
    """``extract.*``: the feature backbone, its preprocessing, precision and parallelism.

    Accepted values are those documented in params.yaml: ``image_size``, ``resize``,
    ``workers``, ``jit`` and ``threads`` also take ``auto`` (``image_size`` and ``resize``
    follow the data: :func:`clusterlens.features.preprocessing.resolve_input`); ``store`` is a folder or
    ``none`` (parsed as None). A sharded run (``processes`` or ``nodes`` > 1) needs a feature
    store.
    """

    backbone: str
    weights: str
    image_size: int | Literal["auto"] = "auto"
    resize: str = "auto"
    batch_size: int
    device: str
    workers: int | Literal["auto"]
    precision: str
    jit: bool | Literal["auto"]
    threads: int | Literal["auto"] = "auto"
    processes: int = 1
    nodes: int = 1
    rdzv_endpoint: str = "localhost:29500"
    # last: its check reads processes and nodes (validated before it, in field order)
    store: str | None

    @field_validator("backbone", mode="before")
    @classmethod
    def _backbone(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a backbone name, got {value!r}")
        problem = unknown_backbone(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("weights", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError("must be DEFAULT, none, a torchvision weights name or a "
                             f"state_dict path; got {value!r}")
        return value

    @field_validator("image_size", mode="before")
    @classmethod
    def _image_size(cls, value: Any) -> int | str:
        return value if value == "auto" else integer(value, 16)

    @field_validator("resize", mode="before")
    @classmethod
    def _resize(cls, value: Any) -> str:
        return choice(value, ("auto",) + tuple(RESIZE_MODES))

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: Any) -> int:
        return integer(value, 1)

    @field_validator("device", "rdzv_endpoint", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        return str(value)

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> int | str:
        return value if value == "auto" else integer(value, 0)

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, value: Any) -> str:
        return choice(value, PRECISIONS)

    @field_validator("jit", mode="before")
    @classmethod
    def _jit(cls, value: Any) -> bool | str:
        if value == "auto" or isinstance(value, bool):
            return value
        raise ValueError(f"must be auto, true or false; got {value!r}")

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, value: Any) -> int | str:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"must be auto or an integer >= 1, got {value!r}")
        return value

    @field_validator("processes", "nodes", mode="before")
    @classmethod
    def _count(cls, value: Any) -> int:
        return integer(value, 1)

    @field_validator("store", mode="before")
    @classmethod
    def _store(cls, value: Any, info: ValidationInfo) -> str | None:
        if not isinstance(value, str) or not value:
            raise ValueError(f"must be a folder path or `none`, got {value!r}")
        if value.lower() != "none":
            return value
        processes, nodes = info.data.get("processes", 1), info.data.get("nodes", 1)
        if processes > 1 or nodes > 1:
            raise ValueError(f"is none, but a sharded run (extract.processes {processes}, "
                             f"extract.nodes {nodes}) exchanges the ranks' features through "
                             "the feature store: give it a folder (shared by all nodes)")
        return None

    @property
    def distributed(self) -> bool:
        """Whether extraction is sharded over several processes or nodes."""
        return self.processes > 1 or self.nodes > 1
