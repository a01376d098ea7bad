"""readmit's biometric matching engine: FAISS galleries with numpy in and numpy out.

Usable on its own (benchmarks, notebooks); it knows nothing of HTTP or SQL.
"""

import faiss

from matcher.calibration import Band, Calibration, Thresholds, fmr_for_fpir, normalise_rate, threshold_at_rate
from matcher.errors import CalibrationError, InvalidTemplateError, MatcherError, SnapshotError
from matcher.formats import Metric, TemplateFormat
from matcher.fusion import SearchResult
from matcher.gallery import GalleryIndex, IndexKind, IndexPolicy
from matcher.snapshot import read_manifest
from matcher.validation import prepare_templates

# Measured on the 2-vCPU machines (DESIGN.md): one OpenMP thread per FAISS call is twice as fast
# as two for single probes and no slower for batches; parallelism comes from concurrent calls.
faiss.omp_set_num_threads(1)

__all__ = [
    "Band",
    "Calibration",
    "CalibrationError",
    "GalleryIndex",
    "IndexKind",
    "IndexPolicy",
    "InvalidTemplateError",
    "MatcherError",
    "Metric",
    "SearchResult",
    "SnapshotError",
    "TemplateFormat",
    "Thresholds",
    "fmr_for_fpir",
    "normalise_rate",
    "prepare_templates",
    "read_manifest",
    "threshold_at_rate",
]
