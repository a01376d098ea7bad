"""Alembic scripts of the service's database, installed as ``app.migrations`` (see setup.py)."""
