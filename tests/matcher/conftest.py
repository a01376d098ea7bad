import numpy as np
import pytest

from matcher import TemplateFormat
from matcher.synthetic import SyntheticSet, make_synthetic_set


@pytest.fixture(scope="session")
def face_format() -> TemplateFormat:
    return TemplateFormat(model="synthetic-arcface", dimension=512)


@pytest.fixture(scope="session")
def realistic_set() -> SyntheticSet:
    """20k enrolled identities with two samples each, 400 mated and 400 non-mated probes."""
    return make_synthetic_set(20_000, samples_per_identity=2, mated_probes=400, nonmated_probes=400, seed=7)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)
