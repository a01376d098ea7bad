"""Template formats: which templates may be compared with which.

Two templates are comparable only when the same model produced them, with the same dimension, and
they are scored with the same metric. A gallery fixes one format for its whole life.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Metric(enum.StrEnum):
    """How two templates are scored; every score is a similarity, higher meaning more alike.

    ``cosine`` normalises templates and probes to unit length on the way in, then uses the inner
    product. ``inner_product`` uses the raw inner product (the model already normalises). ``l2``
    scores by the negated squared Euclidean distance, so that "higher is better" holds for all.
    """

    COSINE = "cosine"
    INNER_PRODUCT = "inner_product"
    L2 = "l2"


@dataclass(frozen=True)
class TemplateFormat:
    """The model that extracted the templates, their dimension and the metric used to score them."""

    model: str
    dimension: int
    metric: Metric = Metric.COSINE

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("a template format needs a model name")
        if not 1 <= self.dimension <= 65536:
            raise ValueError(f"dimension must be between 1 and 65536, got {self.dimension}")
        object.__setattr__(self, "metric", Metric(self.metric))

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "dimension": self.dimension, "metric": self.metric.value}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TemplateFormat:
        return cls(
            model=str(data["model"]),
            dimension=int(data["dimension"]),  # type: ignore[call-overload]
            metric=Metric(str(data["metric"])),
        )
