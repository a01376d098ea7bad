"""A running readmit service for tests: the real app, through httpx (FastAPI's TestClient),
on a real database, or as its own process; with helpers to create principals and galleries."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient

from app.audit.keys import create_signing_key
from app.core.config import Settings
from app.main import create_app
from app.principals.models import Role
from app.principals.service import create_principal

LOG_NAME = "readmit.test/audit"


def principal(
    client: httpx.Client,
    role: str,
    country: str | None = None,
    agency: str | None = None,
    admin: dict[str, str] | None = None,
) -> dict[str, str]:
    """A new principal, created by an admin through ``client`` (``admin``: the admin's headers, when
    the client does not send them already); the headers that authenticate as it."""
    body = {"name": f"{role} officer", "role": role, "country": country, "agency": agency}
    response = client.post("/v1/principals", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['api_key']}"}


class Service:
    def __init__(self, data_dir: Path, database_url: str | None, **overrides: Any) -> None:
        overrides = {"background_process": False, **overrides}  # the passes in threads, for tests to run at will
        self.settings = Settings(data_dir=data_dir, database_url=database_url, snapshot_interval_s=3600, **overrides)
        if not self.settings.audit_key_path.exists():
            create_signing_key(self.settings.audit_key_path, LOG_NAME)
        self.client = self._start()
        _, key = create_principal(self.runtime.sessions, None, "bootstrap admin", Role.ADMIN)
        self.admin = {"Authorization": f"Bearer {key}"}

    def _start(self) -> TestClient:
        client = TestClient(create_app(self.settings, load_indexes_in_background=False))
        client.__enter__()
        return client

    @property
    def runtime(self):
        return self.client.app.state.runtime

    def restart(self, graceful: bool = True) -> None:
        """Stop and start the app on the same data. Not graceful: no final snapshot, as after a crash."""
        if not graceful:
            self.runtime.ready = False  # stop() then skips the final snapshot
        self.client.__exit__(None, None, None)
        self.client = self._start()

    def close(self) -> None:
        self.client.__exit__(None, None, None)

    def reopen(self) -> None:
        """Start the app again after :meth:`close`, on whatever happened to its data meanwhile."""
        self.client = self._start()

    def principal(self, role: str, country: str | None = None, agency: str | None = None) -> dict[str, str]:
        return principal(self.client, role, country, agency, self.admin)

    def gallery(self, country: str = "SEN", modality: str = "face", dimension: int = 64, **template: str) -> int:
        return gallery(self.client, self.admin, country, modality, dimension, **template)


def gallery(
    client: Any,
    admin: dict[str, str],
    country: str = "SEN",
    modality: str = "face",
    dimension: int = 64,
    model: str = "arcface-r100",
    metric: str = "cosine",
) -> int:
    """A new gallery, created by an admin through ``client``; its id."""
    body = {
        "country": country,
        "modality": modality,
        "template_format": {"model": model, "dimension": dimension, "metric": metric},
    }
    response = client.post("/v1/galleries", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def case_body(
    ref: str,
    days_ago: float = 0,
    limit: int = 45,
    countries: tuple[str, ...] = ("SEN",),
    legal_basis: str = "consent",
) -> dict[str, Any]:
    """The body that opens a case for a person detained ``days_ago`` days ago."""
    return {
        "external_ref": ref,
        "detained_at": (datetime.now(UTC) - timedelta(days=days_ago)).isoformat(),
        "detention_limit_days": limit,
        "presumed_countries": list(countries),
        "legal_basis": legal_basis,
    }


def identification_body(probes: Any, model: str = "arcface-r100", **extra: Any) -> dict[str, Any]:
    """The body of a face identification request: ``probes`` one template or a (n, d) array."""
    probes = np.atleast_2d(np.asarray(probes, dtype=np.float32))
    return {
        "modality": "face",
        "template_format": {"model": model, "dimension": probes.shape[1]},
        "probes": probes.tolist(),
        **extra,
    }


def settled(client: Any, headers: dict[str, str], search_id: int, timeout_s: float = 10) -> dict[str, Any]:
    """The search once it has left the queue (polled as a client would), or as it is at
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        search: dict[str, Any] = client.get(f"/v1/searches/{search_id}", headers=headers).json()
        if search["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return search
        time.sleep(0.02)


def records(count: int, dimension: int = 64, samples: int = 2, seed: int = 0, prefix: str = "REF") -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "reference_id": f"{prefix}-{i:05d}",
            "templates": rng.standard_normal((samples, dimension)).round(5).tolist(),
            "attributes": {"family_name": f"Name{i}", "date_of_birth": "1990-01-01"},
        }
        for i in range(count)
    ]


def metric(text: str, name: str, **labels: str) -> float:
    """A sample of a /metrics page as Prometheus scrapes it (0 when not there yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def free_port() -> int:
    """A TCP port nobody listens on right now, for a server started by a test."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """The real service as its own process (``python -m app serve``) on a data folder and
    ``database_url`` (None: the folder's SQLite file), for tests that need real HTTP, signals,
    several processes or a browser. ``admin``: the headers of an admin key created with the
    CLI. Several servers may share one PostgreSQL database, each with its own data folder."""

    def __init__(
        self,
        data_dir: Path,
        database_url: str | None = None,
        processes: int = 1,
        log_path: Path | None = None,
        **env_extra: str,
    ) -> None:
        import os
        import subprocess
        import sys

        self.env = {**os.environ, "READMIT_DATA_DIR": str(data_dir), **env_extra}
        self.env.pop("READMIT_DATABASE_URL", None)
        if database_url is not None:
            self.env["READMIT_DATABASE_URL"] = database_url
        self.processes = processes
        self.log_path = log_path  # where its standard output (the JSON log) goes; None: nowhere
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        key_file = Path(self.env.get("READMIT_AUDIT_KEY_FILE", data_dir / "audit-log.key"))
        self.verifier_key: str | None = None  # None: the log's key came from another node (shared)
        if not key_file.exists():
            keygen = [sys.executable, "-m", "app", "audit", "keygen", "--name", LOG_NAME]
            self.verifier_key = subprocess.run(
                keygen, env=self.env, capture_output=True, text=True, check=True
            ).stdout.strip()
        created = subprocess.run(
            [sys.executable, "-m", "app", "admin", "create-key", "--name", "ops"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        self.admin = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        import subprocess
        import sys
        import time

        log = open(self.log_path, "ab") if self.log_path is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "serve", "--port", str(self.port), "--processes", str(self.processes)],
                env=self.env,
                stdout=log,
                stderr=subprocess.DEVNULL,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # the child holds its own descriptor
        for _ in range(200):
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.process.kill()
        raise RuntimeError("the service did not become ready")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final snapshot, as in a crash."""
        import signal

        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def principal(self, role: str, country: str | None = None, agency: str | None = None) -> dict[str, str]:
        with httpx.Client(base_url=self.base) as client:
            return principal(client, role, country, agency, self.admin)

    def gallery(self, country: str = "SEN", modality: str = "face", dimension: int = 64, **template: str) -> int:
        with httpx.Client(base_url=self.base) as client:
            return gallery(client, self.admin, country, modality, dimension, **template)
