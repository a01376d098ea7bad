"""readmit's biometric matching engine: FAISS galleries with numpy in and numpy out.

Usable on its own (benchmarks, notebooks); it knows nothing of HTTP or SQL.
"""

from matcher.calibration import Band, Calibration, Thresholds, fmr_for_fpir, threshold_at_rate
from matcher.decision import CohortMargin, leave_one_out_decision_scores
from matcher.errors import (
    CalibrationError,
    InvalidTemplateError,
    MatcherError,
    ShardPlacementError,
    ShardUnavailableError,
    SnapshotError,
)
from matcher.formats import Metric, TemplateFormat
from matcher.fusion import SearchResult
from matcher.gallery import GalleryIndex, IndexKind, IndexPolicy
from matcher.sealing import SnapshotKey
from matcher.snapshot import read_manifest
from matcher.validation import prepare_templates

__all__ = [
    "Band",
    "Calibration",
    "CalibrationError",
    "CohortMargin",
    "GalleryIndex",
    "IndexKind",
    "IndexPolicy",
    "InvalidTemplateError",
    "MatcherError",
    "Metric",
    "SearchResult",
    "ShardPlacementError",
    "ShardUnavailableError",
    "SnapshotError",
    "SnapshotKey",
    "TemplateFormat",
    "Thresholds",
    "fmr_for_fpir",
    "leave_one_out_decision_scores",
    "prepare_templates",
    "read_manifest",
    "threshold_at_rate",
]
