"""``pip install .``, not editable: the installed ``readmit`` carries its Alembic scripts, so it
creates its database and the first admin key from any working directory, with no checkout."""

import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

REPO = Path(__file__).resolve().parents[2]
# What a clean clone holds that the build reads (the Dockerfile copies the same).
SOURCES = ("pyproject.toml", "setup.py", "README.md", "app", "matcher", "migrations")


def run(*command: str | Path, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_installed_readmit_upgrades_the_database_and_creates_a_key(tmp_path):
    # The build runs on a copy, so that it leaves nothing (build/, egg-info) in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    site = tmp_path / "site"
    # The dependencies and setuptools are those of the test environment: no network, no index.
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-compile"]
    run(*pip, "--target", site, source, cwd=tmp_path, env=dict(os.environ))

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "READMIT_DATA_DIR": str(tmp_path / "data")}
    env.pop("READMIT_DATABASE_URL", None)
    imported = run(sys.executable, "-P", "-c", "import app; print(app.__file__)", cwd=outside, env=env)
    assert Path(imported.strip()).is_relative_to(site), "the checkout, not the installed package, was imported"

    readmit = site / "bin" / "readmit"
    assert "database at head" in run(readmit, "db", "upgrade", cwd=outside, env=env)
    key = run(readmit, "admin", "create-key", "--name", "x", cwd=outside, env=env).strip().splitlines()[-1]
    assert key.startswith("rdm_") and len(key) > 50

    config = Config()
    config.set_main_option("script_location", str(REPO / "migrations"))
    head = ScriptDirectory.from_config(config).get_current_head()
    with closing(sqlite3.connect(tmp_path / "data" / "readmit.db")) as database:
        assert database.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]
