"""The ``tsne`` section: the sampled 2-D t-SNE embedding."""
from __future__ import annotations

from pydantic import Field, field_validator

from clusterlens.config.base import Section


class TSNEParams(Section):
    """``tsne.*``.

    ``sample``: embed a seeded sample of this many images, all when fewer (>= 4);
    ``perplexity``: a positive number (capped at (sample - 1) / 3 for small samples);
    ``max_iter``: optimisation iterations (>= 250, scikit-learn's minimum).
    """

    sample: int = Field(ge=4)
    perplexity: float
    max_iter: int = Field(ge=250)

    @field_validator("perplexity")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"must be a positive number, got {value!r}")
        return value
