"""Shared test set-up: which databases the database-touching tests run against.

SQLite always; PostgreSQL too when ``READMIT_TEST_POSTGRES_URL`` names a server on which the
test user may create databases (``.ci/run`` starts one). In CI a missing PostgreSQL is an error,
not a silent skip.
"""

import os

import pytest

POSTGRES_URL = os.environ.get("READMIT_TEST_POSTGRES_URL")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CI") == "true" and not POSTGRES_URL:
        raise pytest.UsageError("CI must test PostgreSQL: set READMIT_TEST_POSTGRES_URL (see .ci/run)")
