"""What pyproject.toml cannot say: the Alembic scripts, kept at the top of the repository in
``migrations/``, install inside the service as the package ``app.migrations``, so that an installed
``readmit`` finds them as a checkout does (``app/core/config.py``). Everything else is in
pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["app", "app.*", "matcher", "matcher.*"]),
        "app.migrations",
        "app.migrations.versions",
    ],
    package_dir={"app.migrations": "migrations"},
)
