"""The README's walk-through as a reader runs it: every block marked ``<!-- walkthrough -->``,
pasted in order into one bash, against a freshly started service, with the admin key in
``ADMIN`` and the service's address in ``API``."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ServerProcess

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- walkthrough -->"
BLOCK = re.compile(rf"^{re.escape(MARKER)}\n```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def walkthrough() -> str:
    text = README.read_text()
    blocks = BLOCK.findall(text)
    assert blocks and len(blocks) == text.count(MARKER), f"each {MARKER} must come right before a ```sh block"
    return "\n".join(blocks)


def test_every_curl_fails_on_an_error_answer():
    calls = [line for line in walkthrough().splitlines() if re.search(r"\bcurl ", line)]
    assert calls and all("--fail-with-body" in line for line in calls), calls


@pytest.mark.skipif(shutil.which("curl") is None, reason="the walk-through is written for curl")
def test_the_walkthrough_identifies_the_person_and_the_audit_trail_verifies(tmp_path):
    server = ServerProcess(tmp_path / "data")
    try:
        env = {
            **os.environ,
            "ADMIN": server.admin["Authorization"].removeprefix("Bearer "),
            "API": server.base,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # readmit, as installed
        }
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", walkthrough()],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()

    enrolled = json.loads(next(line for line in lines if '"inserted"' in line))
    assert (enrolled["inserted"], enrolled["errors"]) == (3, [])
    # search status, its first candidate and band; verification; the consul's queue and decision
    found = lines.index("done")
    assert lines[found : found + 6] == ["done", "SEN-NIC-000123", "match", "match", "SEN-NIC-000123", "identified"]
    verified = next(i for i, line in enumerate(lines) if line.startswith('{"ok"'))
    trail = [line.split() for line in lines[found + 6 : verified]]  # seq, role, action, resource, outcome
    assert [int(event[0]) for event in trail] == list(range(1, len(trail) + 1)), trail
    assert any(event[1] == "consular" and event[3].startswith("candidate/") for event in trail), trail
    assert json.loads(lines[verified])["ok"] is True
    # the checkpoint signed on demand covers the whole walk-through, and the remote verifier accepts it
    tree_size = int(lines[verified + 1])
    assert tree_size > len(trail)
    assert lines[-1].startswith(f"audit log verified: tree size {tree_size} (first checkpoint stored)"), lines[-1]
