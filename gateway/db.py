"""Schema migrations and the partitions of the observations table."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

# Any constant works; it keeps two `aidlink db migrate` runs from interleaving.
_MIGRATION_LOCK = 0x616964_6C696E6B

_PARTITION_FUNCTION = """
CREATE OR REPLACE FUNCTION aidlink_ensure_observation_partition(at timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    start_at timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    name text := 'observations_' || to_char(start_at AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    -- Monthly partitions, made on first use; the lock keeps two writers from racing.
    PERFORM pg_advisory_xact_lock(hashtext(name));
    IF to_regclass(name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF observations FOR VALUES FROM (%L) TO (%L)',
            name, start_at, start_at + interval '1 month');
    END IF;
END $$;
"""


class MigrationError(Exception):
    """A migration failed; the message names it."""


def _has_timescaledb(conn: psycopg.Connection[object]) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def _migration_sql(name: str, conn: psycopg.Connection[object]) -> str:
    text = resources.files("gateway.migrations").joinpath(name).read_text()
    if name == "0003_observations.sql":
        if _has_timescaledb(conn):
            text = text.replace("{partitioning}", "")
            text += (
                "CREATE EXTENSION IF NOT EXISTS timescaledb;\n"
                "SELECT create_hypertable('observations', 'ts', "
                "chunk_time_interval => interval '7 days');\n"
            )
        else:
            text = text.replace("{partitioning}", "PARTITION BY RANGE (ts)") + _PARTITION_FUNCTION
    return text


def migration_names() -> list[str]:
    """The migration files in the order they apply."""
    files = resources.files("gateway.migrations").iterdir()
    return sorted(f.name for f in files if f.name.endswith(".sql"))


def migrate(url: str) -> list[str]:
    """Apply every migration not yet applied; safe to re-run. Returns what it applied."""
    applied: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
            for name in migration_names():
                if name in done:
                    continue
                try:
                    with conn.transaction():
                        conn.execute(_migration_sql(name, conn).encode())
                        conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
                except psycopg.Error as exc:
                    raise MigrationError(f"migration {name} failed: {exc}") from exc
                log.info("applied migration %s", name)
                applied.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied


def uses_timescaledb(conn: psycopg.Connection[object]) -> bool:
    """Whether observations is a TimescaleDB hypertable (else native partitions)."""
    row = conn.execute(
        "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    return row is not None


def month_start(moment: datetime) -> datetime:
    """The first instant of moment's month in UTC: the key of its partition."""
    at = moment.astimezone(UTC)
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
