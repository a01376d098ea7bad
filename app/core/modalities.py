"""The name of a biometric modality (``face``, ``finger``, ``iris``…), the same rule wherever a
request names one."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

Modality = Annotated[str, StringConstraints(pattern=r"^[a-z_]{2,32}$")]
