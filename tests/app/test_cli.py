import os
import subprocess
import sys
import time

import httpx
from typer.testing import CliRunner

from app.cli import cli
from app.core.config import get_settings


def test_create_key_bootstraps_an_admin_whose_key_works(tmp_path, monkeypatch, database_url):
    monkeypatch.setenv("READMIT_DATA_DIR", str(tmp_path / "data"))
    if database_url:
        monkeypatch.setenv("READMIT_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["admin", "create-key", "--name", "operator"])
        assert result.exit_code == 0, result.output
        key = result.output.strip().splitlines()[-1]
        assert key.startswith("rdm_") and len(key) > 50

        keygen = CliRunner().invoke(cli, ["audit", "keygen", "--name", "readmit.test/audit"])
        assert keygen.exit_code == 0 and keygen.stdout.startswith("readmit.test/audit+"), keygen.output
        again = CliRunner().invoke(cli, ["audit", "keygen", "--name", "readmit.test/audit"])
        assert again.exit_code == 1 and "already holds a key" in again.output

        from fastapi.testclient import TestClient

        from app.main import create_app

        with TestClient(create_app(get_settings(), load_indexes_in_background=False)) as client:
            response = client.get("/v1/principals", headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200
            assert response.json()[0]["role"] == "admin"
        assert CliRunner().invoke(cli, ["db", "upgrade"]).exit_code == 0
    finally:
        get_settings.cache_clear()


def test_python_dash_m_app_has_help():
    result = subprocess.run(
        [sys.executable, "-m", "app", "--help"], capture_output=True, text=True, check=True, env={**os.environ}
    )
    for command in ("serve", "db", "admin"):
        assert command in result.stdout


def test_serve_refuses_to_start_an_existing_log_without_its_key(tmp_path):
    """Only a new installation gets a new key: a database that exists (here migrated, before
    any start) may hold a log some verifier trusts, and a new key would sign a different log."""
    env = {**os.environ, "READMIT_DATA_DIR": str(tmp_path / "existing")}
    env.pop("READMIT_DATABASE_URL", None)
    subprocess.run([sys.executable, "-m", "app", "db", "upgrade"], env=env, check=True, capture_output=True)
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", "18733"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "no audit log signing key" in result.stderr and "readmit audit keygen" in result.stderr
    assert not (tmp_path / "existing" / "audit-log.key").exists()


def test_serve_starts_on_a_fresh_data_folder(tmp_path):
    """The README's start command, as a process: the log's key created and its verifier key
    printed, data folder created, migrations applied, ready."""
    env = {**os.environ, "READMIT_DATA_DIR": str(tmp_path / "fresh"), "READMIT_AUDIT_LOG_NAME": "readmit.test/audit"}
    env.pop("READMIT_DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", "18731", "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = False
        for _ in range(100):
            try:
                ready = httpx.get("http://127.0.0.1:18731/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready:
                break
            time.sleep(0.2)
        assert ready, "the service did not become ready"
        assert (tmp_path / "fresh" / "readmit.db").exists()
        assert (tmp_path / "fresh" / "audit-log.key").stat().st_mode & 0o777 == 0o600
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    assert "readmit.test/audit+" in output, "the verifier key to publish is printed"
