"""Principals join gradually: a principal registered as not participating has no policy, CA
or API clients and gets no devices or data until it joins; one participating from a date gets
none before that date. Against a real PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from gateway import db
from gateway.auth import Role
from gateway.cli import main
from gateway.ingest.store import BatchStore, Incoming
from provisioning import api_clients, bulk, onboarding, participation, service
from provisioning.errors import ConflictError
from simulators.bpm import BpReading, encode
from tests.support import Fleet, api_client, bearer, count, seed

PASSPHRASE = b"participation-test-ca-passphrase"


def _reading(fleet: Fleet, minutes_ago: int) -> Incoming:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)
    payload = encode(BpReading(systolic=Decimal(120), diastolic=Decimal(80), mean=Decimal(93),
                               measured_at=at))
    return Incoming(topic=f"aidlink/v1/{fleet.hub}/{fleet.cuff}/ble/2a35", payload=payload,
                    received_at=datetime.now(UTC))


def _elsewhere(url: str, sql: str, *params: object) -> None:
    with psycopg.connect(url) as other:
        other.execute(sql, params)


def _cas(conn: psycopg.Connection[Any], code: str) -> int:
    row = conn.execute("SELECT count(*) FROM certificate_authorities WHERE principal_code = %s",
                       (code,)).fetchone()
    assert row is not None
    return int(row[0])


def test_existing_principals_keep_participating(database_url: str) -> None:
    seed(database_url)
    with psycopg.connect(database_url) as conn:
        rows = participation.report(conn)
    assert [(r["principal"], r["participating"], r["devices"]) for r in rows] == [
        ("20", True, 3), ("2080", True, 2)]
    assert all(r["participates_from"] is not None for r in rows)


def test_a_principal_not_participating_gets_nothing_until_it_joins(database_url: str) -> None:
    db.migrate(database_url)
    with psycopg.connect(database_url) as conn:
        service.add_principal(conn, "2062", "Mora", participating=False, actor="t")
        with pytest.raises(participation.ParticipationError,
                           match=r"principal 2062 does not participate .*participation rule"):
            onboarding.onboard(conn, PASSPHRASE, principal="2062", model="bpm", serial="M1",
                               actor="t")
        with pytest.raises(participation.ParticipationError, match="adding an API client"):
            api_clients.add_client(conn, principal="2062", role=Role.CLINICIAN,
                                   scopes=["observations"], name="EHR", actor="t")
        assert _cas(conn, "2062") == 0
        joined = participation.join(conn, PASSPHRASE, "2062", actor="cli:anna")
        assert joined["policy_version"] == 1 and joined["joined_by"] == "cli:anna"
        assert _cas(conn, "2062") == 1
        made = onboarding.onboard(conn, PASSPHRASE, principal="2062", model="bpm",
                                  serial="M1", actor="t")
        assert "certificate_pem" in made
        with pytest.raises(ConflictError, match="has joined already"):
            participation.join(conn, PASSPHRASE, "2062", actor="t")
        rows = {r["principal"]: r for r in participation.report(conn)}
    assert rows["2062"]["participating"] is True
    assert rows["2062"]["devices"] == 1


def test_onboarding_before_the_first_day_is_refused(database_url: str) -> None:
    db.migrate(database_url)
    tomorrow = datetime.now(participation.CENTRE_ZONE).date() + timedelta(days=1)
    with psycopg.connect(database_url) as conn:
        service.add_principal(conn, "2034", "Orsa", participates_from=participation.start_of(
            tomorrow))
        with pytest.raises(participation.ParticipationError,
                           match=f"participates from {tomorrow.isoformat()}"):
            service.onboard_device(conn, principal="2034", model="bpm", serial="O1", actor="t")
        report = participation.report(conn, principal="2034")
    assert report[0]["participating"] is False


def test_bulk_refuses_rows_of_a_principal_not_participating(database_url: str) -> None:
    seed(database_url)
    with psycopg.connect(database_url) as conn:
        service.add_principal(conn, "2085", "Ludvika", participating=False)
        result = bulk.onboard_csv(conn, PASSPHRASE, "principal,model,serial\n2085,bpm,L1\n",
                                  actor="t")
    assert result.onboarded == []
    assert result.refused[0]["reason"].startswith(
        "line 2: refused: principal not participating: principal 2085 does not participate")


def test_the_gateway_dead_letters_data_of_a_principal_not_participating(
        database_url: str) -> None:
    fleet = seed(database_url)
    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)
        assert store.write([_reading(fleet, 9)]).stored_messages == 1
        # Changed on another connection: the version bump must make the gateway see it.
        _elsewhere(database_url, "UPDATE principals SET participates_from = NULL,"
                   " joined_at = NULL WHERE code = '20'")
        result = store.write([_reading(fleet, 8)])
        assert result.dead_letters == {"principal_not_participating": 1}
        _elsewhere(database_url, "UPDATE principals SET participates_from = now() + interval"
                   " '1 day', joined_at = now() WHERE code = '20'")
        assert store.write([_reading(fleet, 7)]).dead_letters == {
            "principal_not_participating": 1}
        _elsewhere(database_url, "UPDATE principals SET participates_from = now() - interval"
                   " '1 second' WHERE code = '20'")
        assert store.write([_reading(fleet, 6)]).stored_messages == 1
    assert count(database_url, "SELECT sum(times) FROM dead_letters"
                               " WHERE reason = 'principal_not_participating'") == 2


def _cli(url: str, home: Path, *args: str, code: int = 0) -> str:
    env = {"AIDLINK_DATABASE_URL": url, "AIDLINK_HOME": str(home), "AIDLINK_SECRET": "s" * 40}
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == code, result.output
    return result.output


def test_principal_commands_and_the_participation_report(database_url: str,
                                                         tmp_path: Path) -> None:
    db.migrate(database_url)
    _cli(database_url, tmp_path, "principal", "add", "20", "--name", "Region Dalarna")
    _cli(database_url, tmp_path, "principal", "add", "2061", "--name", "Smedjebacken",
         "--not-participating")
    refused = _cli(database_url, tmp_path, "device", "onboard", "--principal", "2061",
                   "--model", "bpm", "--serial", "S1", code=1)
    assert "participation rule" in refused
    joined = json.loads(_cli(database_url, tmp_path, "principal", "join", "2061",
                             "--from", "2026-01-15"))
    assert joined["participates_from"].startswith("2026-01-14T23:00:00")
    assert joined["intermediate_ca"] is True
    _cli(database_url, tmp_path, "principal", "add", "2039", "--name", "Älvdalen",
         "--participates-from", "2099-01-01")
    text = _cli(database_url, tmp_path, "report", "participation", "--csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["principal"], r["participating"]) for r in rows] == [
        ("20", "True"), ("2039", "False"), ("2061", "True")]
    assert rows[1]["participates_from"] == "2098-12-31T23:00:00+00:00"


def _items(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_the_participation_route_and_joining_over_the_api(database_url: str) -> None:
    seed(database_url)
    with api_client(database_url, ca_passphrase=PASSPHRASE) as api:
        admin = bearer("20", Role.ADMIN)
        made = api.post("/v1/principals", headers=admin,
                        json={"code": "2081", "name": "Borlänge", "participating": False})
        assert made.status_code == 201, made.text
        own = _items(api.get("/v1/reports/participation", headers=bearer("2080", Role.TECHNICIAN)))
        assert [r["principal"] for r in own] == ["2080"]
        every = _items(api.get("/v1/reports/participation", headers=admin))
        assert {r["principal"]: r["participating"] for r in every} == {
            "20": True, "2080": True, "2081": False}
        refused = api.post("/v1/devices", headers=admin,
                           json={"principal": "2081", "model": "bpm", "serial": "B1"})
        assert refused.status_code == 422 and "participation rule" in refused.text
        assert api.post("/v1/principals/2081/join", headers=bearer("2080", Role.TECHNICIAN),
                        json={}).status_code == 403
        joined = api.post("/v1/principals/2081/join", headers=admin,
                          json={"from": date.today().isoformat()})
        assert joined.status_code == 200, joined.text
        onboarded = api.post("/v1/devices", headers=admin,
                             json={"principal": "2081", "model": "bpm", "serial": "B1"})
        assert onboarded.status_code == 201, onboarded.text
