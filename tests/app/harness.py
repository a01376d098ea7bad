"""A running readmit service for tests: the real app, through httpx (FastAPI's TestClient),
on a real database, with helpers to create principals and galleries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.db.session import transaction
from app.main import create_app
from app.principals.models import Role
from app.principals.service import create_principal


class Service:
    def __init__(self, data_dir: Path, database_url: str | None, **overrides: Any) -> None:
        self.settings = Settings(data_dir=data_dir, database_url=database_url, snapshot_interval_s=3600, **overrides)
        self.client = self._start()
        with transaction(self.runtime.sessions) as session:
            _, key = create_principal(session, None, "bootstrap admin", Role.ADMIN)
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

    def principal(self, role: str, country: str | None = None, agency: str | None = None) -> dict[str, str]:
        body = {"name": f"{role} {country or ''}", "role": role, "country": country, "agency": agency}
        response = self.client.post("/v1/principals", json=body, headers=self.admin)
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['api_key']}"}

    def gallery(
        self,
        country: str = "SEN",
        modality: str = "face",
        dimension: int = 64,
        model: str = "arcface-r100",
        metric: str = "cosine",
    ) -> int:
        body = {
            "country": country,
            "modality": modality,
            "template_format": {"model": model, "dimension": dimension, "metric": metric},
        }
        response = self.client.post("/v1/galleries", json=body, headers=self.admin)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])


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


def free_port() -> int:
    """A TCP port nobody listens on right now, for a server started by a test."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
