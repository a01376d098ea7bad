import pytest

from app.matching.rates import rate_from_request
from matcher import CalibrationError


def test_mosip_integer_and_fraction_are_both_accepted():
    assert rate_from_request(30) == pytest.approx(0.001)
    assert rate_from_request(40.0) == pytest.approx(0.0001)
    assert rate_from_request(0.01) == 0.01
    for bad in (0, -0.1, 1.5, float("nan"), float("inf"), 10_000):  # 10,000: 1e-1000 is no float
        with pytest.raises(CalibrationError):
            rate_from_request(bad)
