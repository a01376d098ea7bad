"""Shared test set-up: which databases the database-touching tests run against.

SQLite always; PostgreSQL too when ``READMIT_TEST_POSTGRES_URL`` names a server on which the
test user may create databases (``.ci/run`` starts one). In CI a missing PostgreSQL is an error,
not a silent skip.
"""

import atexit
import os
import shutil
import tempfile

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

POSTGRES_URL = os.environ.get("READMIT_TEST_POSTGRES_URL")

# Hypothesis's pytest plugin caches the constants of every test module it collects, in
# ./.hypothesis unless told otherwise: set here, before any test module is collected, so that no
# run, whole or targeted, writes into the checkout. Kept for the session, then removed.
HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="readmit-hypothesis-")
set_hypothesis_home_dir(HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, HYPOTHESIS_HOME, ignore_errors=True)

# The master key of encryption at rest: by default the service keeps it in the user's
# ~/.config/readmit, which a test run must not touch. One key for the session, made by the first
# service that starts (in process or as a subprocess, which inherits the variable).
MASTER_KEY_HOME = tempfile.mkdtemp(prefix="readmit-master-key-")
os.environ["READMIT_MASTER_KEY_FILE"] = os.path.join(MASTER_KEY_HOME, "master.key")
atexit.register(shutil.rmtree, MASTER_KEY_HOME, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CI") == "true" and not POSTGRES_URL:
        raise pytest.UsageError("CI must test PostgreSQL: set READMIT_TEST_POSTGRES_URL (see .ci/run)")
