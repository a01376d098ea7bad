"""Database unreachable: requests get 503 ``database_unavailable`` (never a 500 or a hang), and
the service recovers by itself, without a restart, when the database comes back. PostgreSQL
only: the outage is made by refusing and cutting the service's connections."""

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_URL


def set_outage(database_url: str, down: bool) -> None:
    name = make_url(database_url).database
    admin = create_engine(make_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if down else "true"}'))
        if down:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
    admin.dispose()


def test_outage_answers_503_and_recovers_without_restart(service, database_url):
    if database_url is None:
        pytest.skip("the outage is made on PostgreSQL")
    assert service.client.get("/v1/agreements", headers=service.admin).status_code == 200
    set_outage(database_url, down=True)
    try:
        for path in ("/v1/agreements", "/v1/galleries"):
            response = service.client.get(path, headers=service.admin)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "database_unavailable"
        ready = service.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"] is False
    finally:
        set_outage(database_url, down=False)
    assert service.client.get("/v1/agreements", headers=service.admin).status_code == 200
    assert service.client.get("/readyz").status_code == 200
