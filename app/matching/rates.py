"""False-positive rates as clients write them in requests."""

from __future__ import annotations

from matcher import CalibrationError


def rate_from_request(value: float) -> float:
    """A request's FPIR or FMR as the fraction the matcher takes: given as a fraction in (0, 1)
    (0.001), or as a MOSIP ABIS integer ``round(-10 * log10(rate))`` (30 for 0.001).

    The integer is the notation of MOSIP's ABIS interface, which clients integrating readmit
    behind MOSIP send unchanged; it is an API convention, so it is read here and the matcher only
    ever sees fractions. Raises CalibrationError for anything else, and for an integer so large
    that its rate is not a positive float.
    """
    if 0.0 < value < 1.0:
        return float(value)
    if value >= 1.0 and float(value).is_integer() and (rate := 10.0 ** (-value / 10.0)) > 0.0:
        return rate
    raise CalibrationError(f"a false-positive rate is a fraction in (0, 1) or a MOSIP integer >= 1, got {value}")
