"""Per-principal retention of observations and raw payloads, on a real PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.types.json import Jsonb

from gateway import db, retention
from gateway.cli import main
from provisioning import policy, service

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
# Principal 20 keeps observations 60 days (cutoff 2025-04-16) and raw payloads 30 days;
# 2080 keeps observations 400 days (cutoff 2024-05-11) and raw payloads 90 days. No principal
# needs anything before 2024-05-11, so the partitions of March and April 2024 can go.
SHORT, LONG = "20", "2080"
TIMES = [
    datetime(2024, 3, 10, tzinfo=UTC),
    datetime(2024, 4, 20, tzinfo=UTC),
    datetime(2024, 5, 5, tzinfo=UTC),
    datetime(2024, 5, 20, tzinfo=UTC),
    datetime(2025, 3, 10, tzinfo=UTC),
    datetime(2025, 5, 1, tzinfo=UTC),
    datetime(2025, 6, 10, tzinfo=UTC),
]
CODES = ("8480-6", "8462-4", "8867-4")  # three readings per principal and moment
KEPT = {SHORT: TIMES[5:], LONG: TIMES[3:]}


def _seed(url: str) -> None:
    db.migrate(url)
    with psycopg.connect(url) as conn:
        service.add_principal(conn, SHORT, "Region Dalarna")
        service.add_principal(conn, LONG, "Falun")
        policy.set_policy(conn, SHORT, {"observation_retention_days": 60,
                                        "raw_payload_retention_days": 30}, "test")
        policy.set_policy(conn, LONG, {"observation_retention_days": 400,
                                       "raw_payload_retention_days": 90}, "test")
        for at in TIMES:
            conn.execute("SELECT aidlink_ensure_observation_partition(%s)", (at,))
        for principal in (SHORT, LONG):
            for at in TIMES:
                for code in CODES:
                    conn.execute(
                        "INSERT INTO observations (ts, device_id, code, principal_code,"
                        " patient_key, value, unit, channel, received_at)"
                        " VALUES (%s, %s, %s, %s, 'p', 120, 'mm[Hg]', 'ble/2a35', %s)",
                        (at, f"dev-{principal}", code, principal, at),
                    )
        letters: list[tuple[str | None, int, bytes]] = [
            (SHORT, 40, b"short-old"), (SHORT, 10, b"short-new"),
            (LONG, 100, b"long-old"), (LONG, 40, b"long-new"),
            (None, 35, b"nobody-old"), (None, 5, b"nobody-new")]
        for owner, days, payload in letters:
            seen = NOW - timedelta(days=days)
            conn.execute(
                "INSERT INTO dead_letters (first_seen, last_seen, topic, principal_code,"
                " payload, payload_sha256, reason, detail)"
                " VALUES (%s, %s, %s, %s, %s, sha256(%s), 'decode', 'bad length')",
                (seen, seen, f"aidlink/v1/c/{payload.decode()}/scaip", owner, payload,
                 payload),
            )
        for days in (40, 5):
            at = NOW - timedelta(days=days)
            conn.execute(
                "INSERT INTO events (occurred_at, device_id, principal_code, type, data,"
                " channel, device_time, received_at)"
                " VALUES (%s, 'alarm-1', %s, 'alarm.button', %s, 'scaip', true, %s)",
                (at, SHORT, Jsonb({"ref": str(days), "raw": {"stc": "10"}}), at),
            )
        # Access-log entries far older than any observation retention.
        for at in (datetime(2021, 1, 5, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)):
            conn.execute(
                "INSERT INTO access_log (at, principal_code, client, role, patient_key,"
                " action, purpose) VALUES (%s, %s, 'ehr', 'clinician', 'p', 'read', 'care')",
                (at, SHORT),
            )


def _snapshot(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        observations = {
            principal: sorted({row[0] for row in conn.execute(
                "SELECT ts FROM observations WHERE principal_code = %s", (principal,))})
            for principal in (SHORT, LONG)
        }
        letters = {row[0]: row[1] for row in conn.execute(
            "SELECT topic, payload FROM dead_letters ORDER BY topic")}
        raw = {row[0]: row[1] for row in conn.execute(
            "SELECT data ->> 'ref', data ? 'raw' FROM events")}
        log = conn.execute("SELECT id, at FROM access_log ORDER BY id").fetchall()
        partitions = {month: conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                          (f"observations_{month}",)).fetchone()
                      for month in ("202403", "202404", "202405", "202503")}
    return {"observations": observations, "letters": letters, "raw": raw, "log": log,
            "partitions": {m: bool(v and v[0]) for m, v in partitions.items()}}


def _counts(result: dict[str, Any]) -> dict[str, dict[str, int]]:
    keys = ("observations", "dead_letter_payloads", "event_raw_payloads")
    counts = {code: {k: entry[k] for k in keys} for code, entry in result["principals"].items()}
    counts.update(result["other"])
    return counts


EXPECTED = {
    SHORT: {"observations": 5 * len(CODES), "dead_letter_payloads": 1, "event_raw_payloads": 1},
    LONG: {"observations": 3 * len(CODES), "dead_letter_payloads": 1, "event_raw_payloads": 0},
    retention.UNATTRIBUTED: {"observations": 0, "dead_letter_payloads": 1,
                             "event_raw_payloads": 0},
}


def test_retention_removes_per_principal_and_keeps_the_access_log(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _seed(database_url)
    # Small batches, so the per-principal deletes run several batches and commits.
    monkeypatch.setattr(retention, "BATCH_ROWS", 4)
    before = _snapshot(database_url)

    with psycopg.connect(database_url) as conn:
        dry = retention.apply_retention(conn, NOW, dry_run=True)
    assert dry["dry_run"] is True and dry["run_id"] is None
    assert _counts(dry) == EXPECTED
    assert dry["partitions_dropped"] == ["observations_202403", "observations_202404"]
    assert _snapshot(database_url) == before, "a dry run changed the database"

    with psycopg.connect(database_url) as conn:
        done = retention.apply_retention(conn, NOW)
    assert "error" not in done
    assert _counts(done) == EXPECTED
    assert done["partitions_dropped"] == dry["partitions_dropped"]

    after = _snapshot(database_url)
    assert after["observations"] == KEPT
    assert after["partitions"] == {"202403": False, "202404": False, "202405": True,
                                   "202503": True}
    topic = "aidlink/v1/c/{}/scaip".format
    assert after["letters"] == {
        topic("short-old"): None, topic("short-new"): b"short-new",
        topic("long-old"): None, topic("long-new"): b"long-new",
        topic("nobody-old"): None, topic("nobody-new"): b"nobody-new",
    }
    assert after["raw"] == {"40": False, "5": True}
    assert after["log"] == before["log"] and len(after["log"]) == 2

    with psycopg.connect(database_url) as conn:
        kept = conn.execute(
            "SELECT reason, detail, times, payload_removed_at IS NOT NULL FROM dead_letters"
            " WHERE topic = %s", (topic("short-old"),)).fetchone()
        assert kept == ("decode", "bad length", 1, True)
        runs = conn.execute("SELECT id, reference_time, removed, partitions_dropped, error"
                            " FROM retention_runs ORDER BY id").fetchall()
    assert len(runs) == 1, "the dry run must not be recorded, the real one must"
    run_id, reference, removed, parts, error = runs[0]
    assert (run_id, reference, error) == (done["run_id"], NOW, None)
    assert removed == EXPECTED and parts == done["partitions_dropped"]

    with psycopg.connect(database_url) as conn:
        again = retention.apply_retention(conn, NOW)
    assert again["partitions_dropped"] == []
    assert all(not any(counts.values()) for counts in _counts(again).values())
    assert _snapshot(database_url) == after


def test_a_concurrent_run_is_refused(database_url: str) -> None:
    _seed(database_url)
    with psycopg.connect(database_url) as holder, psycopg.connect(database_url) as conn:
        holder.execute("SELECT pg_advisory_lock(%s)", (retention._RETENTION_LOCK,))
        with pytest.raises(retention.RetentionBusyError, match="another retention run"):
            retention.apply_retention(conn, NOW)
        n = conn.execute("SELECT count(*) FROM observations").fetchone()
    assert n == (2 * len(TIMES) * len(CODES),)


def test_cli_dry_run_prints_the_counts(database_url: str, tmp_path: Path) -> None:
    _seed(database_url)
    env = {"AIDLINK_DATABASE_URL": database_url, "AIDLINK_HOME": str(tmp_path)}
    result = CliRunner().invoke(main, ["data", "retention", "--dry-run"], env=env,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    # Counted back from today, every reading of 2024 is past principal 20's 60 days.
    assert printed["dry_run"] is True
    assert printed["principals"][SHORT]["observations"] >= 5 * len(CODES)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM retention_runs").fetchone() == (0,)


def test_a_drop_that_cannot_get_its_lock_is_recorded_and_removes_nothing(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _seed(database_url)
    monkeypatch.setattr(retention, "_LOCK_TIMEOUT", "200ms")
    before = _snapshot(database_url)
    with psycopg.connect(database_url) as reader, psycopg.connect(database_url) as conn:
        # An open reading transaction holds a lock the partition drop must wait for.
        reader.execute("SELECT count(*) FROM observations")
        result = retention.apply_retention(conn, NOW)
        reader.rollback()
        recorded = conn.execute("SELECT error FROM retention_runs WHERE id = %s",
                                (result["run_id"],)).fetchone()
    assert "lock timeout" in result["error"]
    assert recorded == (result["error"],)
    assert _snapshot(database_url) == before
