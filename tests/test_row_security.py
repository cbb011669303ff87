"""Row-level security in PostgreSQL, the second wall behind the API's scoping: the roles the API
uses see one principal's rows, the access log is append-only, and the owner keeps working."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo

from gateway.api import scoping
from gateway.api.queries import log_access
from gateway.auth import Caller, Role
from gateway.ingest.store import BatchStore, Incoming
from gateway.services.postgres import PostgresProcess
from provisioning import lifecycle
from simulators.bpm import BpReading, encode
from tests.support import Fleet, count, seed

START = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)

# Each protected table, and how the owner counts the rows that belong to a principal.
PROTECTED: dict[str, str] = {
    "principals": "SELECT count(*) FROM principals WHERE code = %s",
    "devices": "SELECT count(*) FROM devices WHERE principal_code = %s",
    "pairings": "SELECT count(*) FROM pairings p JOIN devices d ON d.id = p.hub_id"
                " WHERE d.principal_code = %s",
    "assignments": "SELECT count(*) FROM assignments WHERE principal_code = %s",
    "device_state": "SELECT count(*) FROM device_state s JOIN devices d ON d.id = s.device_id"
                    " WHERE d.principal_code = %s",
    "observations": "SELECT count(*) FROM observations WHERE principal_code = %s",
    "events": "SELECT count(*) FROM events WHERE principal_code = %s",
}
FORCED = [*PROTECTED, "access_log"]


def store_readings(url: str, fleet: Fleet, readings: int = 2) -> None:
    """Readings of both principals through the gateway's batch writer (as the owner), and an
    alarm event of each."""
    batch = []
    for hub, cuff in ((fleet.hub, fleet.cuff), (fleet.other_hub, fleet.other_cuff)):
        for hour in range(readings):
            at = START + timedelta(hours=hour)
            payload = encode(BpReading(systolic=Decimal(120 + hour), diastolic=Decimal(80),
                                       mean=Decimal("93.3"), pulse=Decimal(60), measured_at=at))
            batch.append(Incoming(topic=f"aidlink/v1/{hub}/{cuff}/ble/2a35", payload=payload,
                                  received_at=at + timedelta(seconds=2)))
    with psycopg.connect(url) as conn:
        result = BatchStore(conn).write(batch)
        assert result.stored_messages == 2 * readings
        conn.execute(
            "INSERT INTO events (occurred_at, device_id, principal_code, patient_key, type,"
            " data, channel, device_time, received_at)"
            " SELECT %s, a.device_id, a.principal_code, a.patient_key, 'alarm.button', '{}',"
            " 'status', true, %s FROM assignments a WHERE a.valid_to IS NULL",
            (START, START))


@contextmanager
def scoped(url: str, role: str, principal: str | None) -> Iterator[psycopg.Connection[Any]]:
    """A transaction as ``role`` (through the API's own scoping when a principal is given),
    rolled back at the end."""
    with psycopg.connect(url) as conn:
        if principal is None:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        else:
            scoping.enter(conn, principal, role)
        try:
            yield conn
        finally:
            conn.rollback()


def _one(conn: psycopg.Connection[Any], query: str, *params: Any) -> int:
    row = conn.execute(query.encode(), params).fetchone()
    assert row is not None
    return int(row[0])


def _refused(url: str, role: str, what: str, statement: str) -> None:
    """Fail naming ``what`` unless ``role`` (scoped to principal 20) is refused it."""
    with scoped(url, role, "20") as conn:
        try:
            conn.execute(statement.encode())
        except errors.InsufficientPrivilege:
            return
    pytest.fail(f"{role} was allowed: {what}")


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    fleet = seed(database_url)
    store_readings(database_url, fleet)
    return fleet


@pytest.mark.parametrize("principal", ["20", "2080"])
def test_the_api_role_sees_only_its_principal_in_every_protected_table(
        database_url: str, fleet: Fleet, principal: str) -> None:
    other = "2080" if principal == "20" else "20"
    for table, owned in PROTECTED.items():
        mine = count(database_url, owned, principal)
        assert mine > 0, f"the test data has no {table} row of principal {principal}"
        assert count(database_url, owned, other) > 0, f"no {table} row of principal {other}"
        with scoped(database_url, scoping.API_ROLE, principal) as conn:
            seen = _one(conn, f"SELECT count(*) FROM {table}")
            theirs = _one(conn, owned, other)
        assert (table, seen) == (table, mine)
        assert (table, theirs) == (table, 0)


def test_a_query_without_a_principal_clause_still_sees_one_principal(
        database_url: str, fleet: Fleet) -> None:
    with scoped(database_url, scoping.API_ROLE, "2080") as conn:
        devices = {r[0] for r in conn.execute("SELECT id FROM devices")}
        readings = {r[0] for r in conn.execute("SELECT DISTINCT device_id FROM observations")}
        by_id = conn.execute("SELECT id FROM devices WHERE id = %s", (fleet.cuff,)).fetchall()
    assert devices == {fleet.other_hub, fleet.other_cuff}
    assert readings == {fleet.other_cuff}
    assert by_id == []


@pytest.mark.parametrize("setting", [None, ""])
def test_no_principal_set_shows_nothing(database_url: str, fleet: Fleet,
                                        setting: str | None) -> None:
    with scoped(database_url, scoping.API_ROLE, None) as conn:
        if setting is not None:
            conn.execute("SELECT set_config('aidlink.principal', %s, true)", (setting,))
        seen = {table: _one(conn, f"SELECT count(*) FROM {table}") for table in PROTECTED}
    assert seen == dict.fromkeys(PROTECTED, 0)


def test_the_api_role_only_appends_to_the_access_log(database_url: str, fleet: Fleet) -> None:
    clinician = Caller(principal="20", role=Role.CLINICIAN, subject="ehr-1")
    with scoped(database_url, scoping.API_ROLE, "20") as conn:
        log_access(conn, clinician, patient_keys={"k1"}, action="observations.read",
                   purpose="care", end_user="nurse", detail={"rows": 1})
        conn.commit()
    assert count(database_url, "SELECT count(*) FROM access_log WHERE patient_key = 'k1'") == 1
    refused = {
        "select": "SELECT count(*) FROM access_log",
        "update": "UPDATE access_log SET purpose = 'x'",
        "delete": "DELETE FROM access_log",
        "truncate": "TRUNCATE access_log",
        "backdated insert": "INSERT INTO access_log (at, principal_code, client, role,"
                            " patient_key, action, purpose) VALUES (now() - interval '6 years',"
                            " '20', 'c', 'clinician', 'k', 'a', 'p')",
        "another principal's entry": "INSERT INTO access_log (principal_code, client, role,"
                                     " patient_key, action, purpose)"
                                     " VALUES ('2080', 'c', 'clinician', 'k', 'a', 'p')",
    }
    for what, statement in refused.items():
        _refused(database_url, scoping.API_ROLE, what, statement)


def test_the_api_role_writes_nothing_and_reads_no_other_table(database_url: str,
                                                              fleet: Fleet) -> None:
    statements = [
        "INSERT INTO observations (ts, device_id, code, principal_code, value, unit, channel,"
        " received_at) VALUES (now(), 'd', '8480-6', '20', 1, 'mm[Hg]', 'ble/2a35', now())",
        "UPDATE observations SET value = 0",
        "DELETE FROM events",
        "UPDATE devices SET principal_code = '20'",
        "INSERT INTO assignments (device_id, principal_code, patient_key, basis, assigned_by)"
        " VALUES ('d', '20', 'k', 'HSL', 'x')",
        f"SELECT count(*) FROM dead_letters WHERE device_id = '{fleet.cuff}'",
        "SELECT count(*) FROM certificate_authorities",
        "SELECT count(*) FROM device_owners",
        "SELECT count(*) FROM device_history",
    ]
    for statement in statements:
        _refused(database_url, scoping.API_ROLE, statement, statement)


def test_partitions_are_read_only_through_the_parent(database_url: str, fleet: Fleet) -> None:
    # Partitions (or hypertable chunks) come and go with time; none carries grants or
    # policies of its own, so the API roles reach readings only through the parent.
    with psycopg.connect(database_url) as conn:
        children = [r[0] for r in conn.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits"
            " WHERE inhparent = 'observations'::regclass")]
    assert children, "the readings made no partition or chunk"
    for child in children:
        _refused(database_url, scoping.API_ROLE, f"reading {child} directly",
                 f"SELECT count(*) FROM {child}")


def test_the_audit_role_reads_only_its_principals_access_log(database_url: str,
                                                             fleet: Fleet) -> None:
    with psycopg.connect(database_url) as conn:
        for principal in ("20", "20", "2080"):
            log_access(conn, Caller(principal, Role.CLINICIAN, "ehr"), patient_keys={"k"},
                       action="observations.read", purpose="care", end_user=None, detail={})
    with scoped(database_url, scoping.AUDIT_ROLE, "20") as conn:
        principals = [r[0] for r in conn.execute("SELECT principal_code FROM access_log")]
    assert principals == ["20", "20"]
    with scoped(database_url, scoping.AUDIT_ROLE, None) as conn:
        assert _one(conn, "SELECT count(*) FROM access_log") == 0
    for statement in ("SELECT count(*) FROM observations",
                      "INSERT INTO access_log (principal_code, client, role, patient_key,"
                      " action, purpose) VALUES ('20', 'c', 'r', 'k', 'a', 'p')",
                      "DELETE FROM access_log"):
        _refused(database_url, scoping.AUDIT_ROLE, statement, statement)


def test_the_owner_may_not_rewrite_the_access_log(database_url: str, fleet: Fleet) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO access_log (principal_code, client, role, patient_key, action,"
                     " purpose) VALUES ('20', 'ehr', 'clinician', 'fresh', 'a', 'care')")
        conn.execute("INSERT INTO access_log (at, principal_code, client, role, patient_key,"
                     " action, purpose) VALUES (now() - interval '5 years 1 day', '20', 'ehr',"
                     " 'clinician', 'old', 'a', 'care')")
    refusals = {
        "DELETE FROM access_log WHERE patient_key = 'fresh'": "kept for five years",
        "UPDATE access_log SET purpose = 'other' WHERE patient_key = 'old'": "append-only",
        "TRUNCATE access_log": "TRUNCATE is refused",
    }
    for statement, reason in refusals.items():
        with (psycopg.connect(database_url) as conn,
              pytest.raises(errors.RestrictViolation, match=reason)):
            conn.execute(statement.encode())
    # Past five years an entry may go: the rule is retention, not hoarding forever.
    with psycopg.connect(database_url) as conn:
        gone = conn.execute("DELETE FROM access_log WHERE patient_key = 'old'").rowcount
    assert gone == 1
    assert count(database_url, "SELECT count(*) FROM access_log WHERE patient_key = 'fresh'") == 1


def test_row_security_is_forced_and_the_api_roles_own_nothing(database_url: str,
                                                              fleet: Fleet) -> None:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, o.rolname"
            " FROM pg_class c JOIN pg_roles o ON o.oid = c.relowner"
            " WHERE c.relname = ANY(%s) AND c.relnamespace = 'public'::regnamespace",
            (FORCED,)).fetchall()
        roles = conn.execute(
            "SELECT rolname, rolsuper, rolbypassrls, rolcanlogin FROM pg_roles"
            " WHERE rolname = ANY(%s) ORDER BY rolname", (list(scoping.ROLES),)).fetchall()
        owned = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_roles o ON o.oid = c.relowner"
            " WHERE o.rolname = ANY(%s)", (list(scoping.ROLES),)).fetchone()
    assert sorted(r[0] for r in rows) == sorted(FORCED)
    for name, enabled, forced, owner in rows:
        assert (name, enabled, forced) == (name, True, True)
        assert owner not in scoping.ROLES
    assert roles == [("aidlink_api", False, False, False), ("aidlink_audit", False, False, False)]
    assert owned == (0,)


def test_scoping_refuses_what_would_bypass_the_policies(database_url: str) -> None:
    with (psycopg.connect(database_url, autocommit=True) as conn,
          pytest.raises(scoping.ScopingError, match="autocommit")):
        scoping.enter(conn, "20", scoping.API_ROLE)
    with psycopg.connect(database_url) as conn:
        with pytest.raises(scoping.ScopingError, match="not a scoping role"):
            scoping.enter(conn, "20", "postgres")
        with pytest.raises(scoping.ScopingError, match="principal must not be empty"):
            scoping.enter(conn, "", scoping.API_ROLE)


def test_scoping_lasts_one_transaction(database_url: str, fleet: Fleet) -> None:
    with psycopg.connect(database_url) as conn:
        for role in scoping.ROLES:
            scoping.enter(conn, "20", role)
            assert conn.execute("SELECT current_user, current_setting('aidlink.principal')"
                                ).fetchone() == (role, "20")
            conn.commit()
            after = conn.execute(
                "SELECT current_user, current_setting('aidlink.principal', true)").fetchone()
            assert after is not None and after[0] != role and after[1] in (None, "")
            conn.commit()


@pytest.fixture
def owner_url(database_url: str, pg_server: PostgresProcess) -> Iterator[str]:
    """A database owned and migrated by an ordinary (not superuser) role, as in production
    where the superuser's bypass of row security would hide a missing owner policy."""
    seed(database_url)  # creates the cluster-wide API roles, as a superuser
    suffix = uuid.uuid4().hex[:12]
    owner, name = f"aidlink_owner_{suffix}", f"test_owner_{suffix}"
    with psycopg.connect(pg_server.url(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
        admin.execute(sql.SQL("GRANT aidlink_api, aidlink_audit TO {}").format(
            sql.Identifier(owner)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(owner)))
    try:
        yield make_conninfo(pg_server.url(name), user=owner)
    finally:
        with psycopg.connect(pg_server.url(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(owner)))


def test_an_ordinary_owner_still_writes_and_reads_everything(owner_url: str) -> None:
    fleet = seed(owner_url)
    store_readings(owner_url, fleet)
    with psycopg.connect(owner_url) as conn:
        assert _one(conn, "SELECT rolsuper::int FROM pg_roles WHERE rolname = current_user") == 0
        lifecycle.transfer(conn, device_id=fleet.unpaired, to_principal="2080", actor="t",
                           reason="moved to Falun")
        owners = conn.execute("SELECT principal_code FROM device_owners WHERE device_id = %s"
                              " ORDER BY id", (fleet.unpaired,)).fetchall()
        seen = {table: {p: _one(conn, query, p) for p in ("20", "2080")}
                for table, query in PROTECTED.items()}
    assert owners == [("20",), ("2080",)]
    for table, per_principal in seen.items():
        assert all(per_principal.values()), f"the owner lost rows of {table}: {per_principal}"
    with scoped(owner_url, scoping.API_ROLE, "2080") as conn:
        devices = {r[0] for r in conn.execute("SELECT id FROM devices")}
        readings = _one(conn, "SELECT count(*) FROM observations")
    assert devices == {fleet.other_hub, fleet.other_cuff, fleet.unpaired}
    assert readings == seen["observations"]["2080"]


def test_an_ordinary_owner_stores_through_staging_and_a_redelivery_once(
        owner_url: str) -> None:
    # Row security applies to an owner without BYPASSRLS, and PostgreSQL refuses COPY FROM
    # into such a table: the writer must take the staging way from the start.
    fleet = seed(owner_url)
    at = START + timedelta(days=3)
    message = Incoming(topic=f"aidlink/v1/{fleet.hub}/{fleet.cuff}/ble/2a35",
                       payload=encode(BpReading(systolic=Decimal(121), diastolic=Decimal(80),
                                                mean=Decimal(94), measured_at=at)),
                       received_at=at)
    with psycopg.connect(owner_url) as conn:
        store = BatchStore(conn)
        first, again = store.write([message]), store.write([message])
        assert not store.copies_directly
    assert (first.observations_new, again.observations_new) == (3, 0)
    assert count(owner_url, "SELECT count(*) FROM observations") == 3
