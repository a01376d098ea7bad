"""The ``readmit`` command line: serve, database upgrade, admin key bootstrap."""

from __future__ import annotations

from typing import Annotated

import typer

from app.core.config import get_settings

cli = typer.Typer(help="readmit: biometric identification matching service", no_args_is_help=True)
db_cli = typer.Typer(help="Database schema", no_args_is_help=True)
admin_cli = typer.Typer(help="Principals and keys", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(admin_cli, name="admin")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
) -> None:
    """Start the service (migrations applied, indexes loaded from snapshots or rebuilt).

    Example: readmit serve --host 0.0.0.0 --port 8000
    """
    import uvicorn

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    typer.echo(f"readmit: data in {settings.data_dir.resolve()}, listening on http://{host}:{port} (docs at /docs)")
    uvicorn.run("app.main:create_app", factory=True, host=host, port=port, log_level="info")


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration. Example: readmit db upgrade"""
    from app.db.migrate import upgrade_to_head
    from app.db.session import make_engine

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        upgrade_to_head(settings, engine)
    finally:
        engine.dispose()
    typer.echo("database at head")


@admin_cli.command("create-key")
def create_key(name: Annotated[str, typer.Option(help="who holds the key")]) -> None:
    """Create an admin principal and print its API key once.

    Example: readmit admin create-key --name "operator on duty"
    """
    from app.db.migrate import upgrade_to_head
    from app.db.session import make_engine, make_session_factory, transaction
    from app.principals.models import Role
    from app.principals.service import create_principal

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        upgrade_to_head(settings, engine)
        with transaction(make_session_factory(engine)) as session:
            principal, key = create_principal(session, None, name, Role.ADMIN)
            principal_id = principal.id
    finally:
        engine.dispose()
    typer.echo(f"admin principal {principal_id} created; its API key (shown once):")
    typer.echo(key)


def main() -> None:
    cli()
