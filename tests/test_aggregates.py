"""Daily aggregates per patient and metric (observation_daily) and their scoped view."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from gateway import db, retention
from gateway.cli import main
from gateway.housekeeping_thread import Housekeeping
from provisioning import policy, service
from tests.support import wait_for

SYS, PULSE = "8480-6", "8867-4"
# (principal, patient, code, ts, value): the readings the aggregates are computed from.
READINGS: list[tuple[str, str | None, str, str, int | None]] = [
    ("20", "pA", SYS, "2025-06-01 08:00+00", 120),
    ("20", "pA", SYS, "2025-06-01 12:00+00", 140),
    # 00:30 in Sweden is still 1 June in UTC: days are UTC days.
    ("20", "pA", SYS, "2025-06-02 00:30+02", 130),
    ("20", "pA", SYS, "2025-06-02 09:00+00", 110),
    ("20", "pA", PULSE, "2025-06-01 08:00+00", 61),
    ("20", "pB", SYS, "2025-06-01 08:00+00", 150),
    ("2080", "pC", SYS, "2025-06-01 08:00+00", 160),
    # No patient, or no value: not aggregated.
    ("20", None, SYS, "2025-06-01 10:00+00", 100),
    ("20", "pA", SYS, "2025-06-01 11:00+00", None),
]


def _insert(conn: psycopg.Connection[Any], rows: list[tuple[str, str | None, str, str,
                                                             int | None]]) -> None:
    for number, (principal, patient, code, ts, value) in enumerate(rows):
        conn.execute("SELECT aidlink_ensure_observation_partition(%s)", (ts,))
        conn.execute(
            "INSERT INTO observations (ts, device_id, code, principal_code, patient_key, value,"
            " absent_reason, unit, channel, received_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, 'mm[Hg]', 'ble/2a35', %s)",
            (ts, f"dev-{number}", code, principal, patient, value,
             "not-measured" if value is None else None, ts),
        )


def _seed(url: str) -> None:
    db.migrate(url)
    with psycopg.connect(url) as conn:
        service.add_principal(conn, "20", "Region Dalarna")
        service.add_principal(conn, "2080", "Falun")
        _insert(conn, READINGS)


def _daily(conn: psycopg.Connection[Any]) -> dict[tuple[str, str, str, date], tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT principal_code, patient_key, code, day, n, min, max, avg, first_ts, last_ts,"
        " unit FROM observation_daily").fetchall()
    return {(r[0], r[1], r[2], r[3]): tuple(r[4:]) for r in rows}


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace(" ", "T") + ":00").astimezone(UTC)


def test_daily_aggregates_match_a_hand_computation(database_url: str) -> None:
    _seed(database_url)
    with psycopg.connect(database_url) as conn:
        result = retention.refresh_aggregates(conn)
        assert result["mode"] == "materialized_view" and result["rows"] == 5
        daily = _daily(conn)
    june1, june2 = date(2025, 6, 1), date(2025, 6, 2)
    assert daily == {
        ("20", "pA", SYS, june1): (3, Decimal(120), Decimal(140), Decimal(130),
                                   _at("2025-06-01 08:00+00"), _at("2025-06-02 00:30+02"),
                                   "mm[Hg]"),
        ("20", "pA", SYS, june2): (1, Decimal(110), Decimal(110), Decimal(110),
                                   _at("2025-06-02 09:00+00"), _at("2025-06-02 09:00+00"),
                                   "mm[Hg]"),
        ("20", "pA", PULSE, june1): (1, Decimal(61), Decimal(61), Decimal(61),
                                     _at("2025-06-01 08:00+00"), _at("2025-06-01 08:00+00"),
                                     "mm[Hg]"),
        ("20", "pB", SYS, june1): (1, Decimal(150), Decimal(150), Decimal(150),
                                   _at("2025-06-01 08:00+00"), _at("2025-06-01 08:00+00"),
                                   "mm[Hg]"),
        ("2080", "pC", SYS, june1): (1, Decimal(160), Decimal(160), Decimal(160),
                                     _at("2025-06-01 08:00+00"), _at("2025-06-01 08:00+00"),
                                     "mm[Hg]"),
    }


def test_a_refresh_takes_in_new_readings(database_url: str) -> None:
    _seed(database_url)
    with psycopg.connect(database_url) as conn:
        retention.refresh_aggregates(conn)
        _insert(conn, [("20", "pA", SYS, "2025-06-02 18:00+00", 101),
                       ("20", "pA", SYS, "2025-06-03 07:00+00", 125)])
        conn.commit()
        key = ("20", "pA", SYS, date(2025, 6, 2))
        assert _daily(conn)[key][:4] == (1, 110, 110, 110), "a view refreshed by itself"
        assert ("20", "pA", SYS, date(2025, 6, 3)) not in _daily(conn)
        retention.refresh_aggregates(conn)
        daily = _daily(conn)
    assert daily[key][:4] == (2, Decimal(101), Decimal(110), Decimal("105.5"))
    assert daily[("20", "pA", SYS, date(2025, 6, 3))][:4] == (1, 125, 125, 125)


def _scoped(conn: psycopg.Connection[Any], principal: str | None) -> set[tuple[str, str]]:
    with conn.transaction():
        conn.execute("SET LOCAL ROLE aidlink_api")
        if principal is not None:
            conn.execute("SELECT set_config('aidlink.principal', %s, true)", (principal,))
        rows = conn.execute(
            "SELECT principal_code, patient_key FROM observation_daily_scoped").fetchall()
    return {(r[0], r[1]) for r in rows}


def test_the_scoped_view_shows_only_the_request_principal(database_url: str) -> None:
    _seed(database_url)
    with psycopg.connect(database_url) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'aidlink_api'").fetchone() is None:
            pytest.skip("role aidlink_api missing: migration 0009_row_security creates it")
        retention.refresh_aggregates(conn)
        assert _scoped(conn, "20") == {("20", "pA"), ("20", "pB")}
        assert _scoped(conn, "2080") == {("2080", "pC")}
        assert _scoped(conn, None) == set()
        # The API role reads the aggregates only through the scoped view.
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("SET LOCAL ROLE aidlink_api")
            conn.execute("SELECT count(*) FROM observation_daily")


def test_retention_then_refresh_removes_the_aggregates_of_removed_readings(
        database_url: str) -> None:
    _seed(database_url)
    with psycopg.connect(database_url) as conn:
        policy.set_policy(conn, "20", {"observation_retention_days": 30}, "test")
        retention.refresh_aggregates(conn)
        assert ("20", "pA", SYS, date(2025, 6, 1)) in _daily(conn)
        retention.apply_retention(conn, datetime(2025, 7, 2, 12, tzinfo=UTC))
        retention.refresh_aggregates(conn)
        daily = _daily(conn)
    # 30 days before 2 July 12:00 is 2 June 12:00: 1 June goes, 2 June's 09:00 reading too.
    assert set(daily) == {("2080", "pC", SYS, date(2025, 6, 1))}


def test_housekeeping_runs_retention_and_refresh_on_its_schedule(database_url: str) -> None:
    _seed(database_url)
    keeper = Housekeeping(database_url, interval_s=3600)
    keeper.start()
    try:
        wait_for(lambda: keeper.rounds >= 1, timeout=30, what="the first housekeeping round")
    finally:
        keeper.stop()
    assert keeper.last is not None
    assert keeper.last["retention"]["run_id"] is not None
    assert keeper.last["aggregates"]["rows"] == 5
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM retention_runs").fetchone() == (1,)
    with pytest.raises(ValueError, match="interval must be positive"):
        Housekeeping(database_url, interval_s=0)


def test_cli_refreshes_the_aggregates(database_url: str, tmp_path: Path) -> None:
    _seed(database_url)
    env = {"AIDLINK_DATABASE_URL": database_url, "AIDLINK_HOME": str(tmp_path)}
    result = CliRunner().invoke(main, ["data", "refresh-aggregates"], env=env,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"] == 5
    with psycopg.connect(database_url) as conn:
        assert len(_daily(conn)) == 5
