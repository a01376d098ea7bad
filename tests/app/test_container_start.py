"""The image's start command, run as the container runs it: an unprivileged user, a fresh data
folder, the service answering /readyz. (Docker itself cannot run on CI machines.)

Where the Python installation is readable by other users, the server runs as ``nobody``
(setpriv). Where it is not (CI's Python lives under root's home), it runs in a user namespace
as uid 10001, the image's user, with no privileges over the host: how rootless containers run.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

IMAGE_UID = 10001


def unprivileged_prefix() -> list[str]:
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if (
        shutil.which("setpriv")
        and subprocess.run([*as_nobody, sys.executable, "-c", "import app.main"], capture_output=True).returncode == 0
    ):
        return as_nobody
    return ["unshare", "--user", f"--map-user={IMAGE_UID}", f"--map-group={IMAGE_UID}", "--"]


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root (to drop to an unprivileged user) and util-linux",
)
def test_start_command_as_an_unprivileged_user():
    prefix = unprivileged_prefix()
    uid = subprocess.run(
        [*prefix, sys.executable, "-c", "import os; print(os.geteuid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert uid != "0", "the server must not run as root"
    folder = Path(tempfile.mkdtemp())  # pytest's own temporary folders are private to root
    folder.chmod(0o755)
    data, keys = folder / "data", folder / "keys"
    data.mkdir()
    keys.mkdir()
    if prefix[0] == "setpriv":
        for owned in (data, keys):  # like the image's /data and /keys volumes, owned by its user
            os.chown(owned, 65534, 65534)
    env = {
        **os.environ,
        "READMIT_DATA_DIR": str(data),
        "HOME": str(data),
        "READMIT_MASTER_KEY_FILE": str(keys / "master.key"),
    }
    env.pop("READMIT_DATABASE_URL", None)
    keygen = [sys.executable, "-m", "app", "audit", "keygen", "--name", "readmit.test/audit"]
    subprocess.run([*prefix, *keygen], env=env, cwd=str(data), check=True, capture_output=True)
    readmit = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", "18732"]
    process = subprocess.Popen(
        [*prefix, *readmit], env=env, cwd=str(data), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
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
        output = process.stdout.read().decode()[-2000:] if process.poll() is not None else "still starting"
        assert ready is not None and ready.status_code == 200, output
        assert (data / "readmit.db").exists() and (data / "readmit.lock").exists()
        assert (keys / "master.key").stat().st_mode & 0o777 == 0o600  # made at the first start
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
