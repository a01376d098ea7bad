"""The image's start command, run as the container runs it: a non-root user, a fresh data
folder, the service answering /readyz. (Docker itself cannot run on CI machines.)"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root to drop to an unprivileged user, as the image does",
)
def test_start_command_as_an_unprivileged_user():
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if subprocess.run([*drop, sys.executable, "-c", "import app.main"], capture_output=True).returncode != 0:
        pytest.skip("this checkout or its environment is not readable by an unprivileged user")
    folder = Path(tempfile.mkdtemp())  # pytest's own temporary folders are private to root
    folder.chmod(0o755)
    data = folder / "data"
    data.mkdir()
    os.chown(data, 65534, 65534)  # nobody, like the image's readmit user: owns only its data volume
    env = {**os.environ, "READMIT_DATA_DIR": str(data), "HOME": str(data)}
    env.pop("READMIT_DATABASE_URL", None)
    readmit = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", "18732"]
    process = subprocess.Popen(
        [*drop, *readmit], env=env, cwd=str(data), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        ready = None
        for _ in range(150):
            try:
                ready = httpx.get("http://127.0.0.1:18732/readyz", timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                break
            time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, (
            process.stdout.read().decode()[-2000:] if process.poll() is not None else "not ready"
        )
        assert (data / "readmit.db").stat().st_uid == 65534
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
