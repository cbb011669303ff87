"""An assignment's planned end (``until``), the overdue report built on it, and the optional
reason of onboarding, pairing and assignment, through the service, the CLI and the API."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from gateway.auth import Role
from gateway.cli import main
from provisioning import reports, service
from provisioning.errors import InvalidInputError
from tests.support import SECRET, Fleet, api_client, bearer, seed

Conn = psycopg.Connection[Any]
TECH_20 = bearer("20", Role.TECHNICIAN)
TECH_2080 = bearer("2080", Role.TECHNICIAN)
OVERDUE_HEADER = "device_id,principal,model,unit,planned_until,days_overdue"


def today() -> date:
    """Today in the devices centre's calendar, the one the service and the report use."""
    return datetime.now(reports.CENTRE_ZONE).date()


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed(database_url)


@pytest.fixture
def conn(database_url: str, fleet: Fleet) -> Iterator[Conn]:
    with psycopg.connect(database_url) as connection:
        yield connection


def history(conn: Conn, device: str, action: str) -> dict[str, Any]:
    """The detail of the device's latest history row with ``action``."""
    rows = [row for row in service.history(conn, device) if row["action"] == action]
    assert rows, f"device {device} has no {action} row"
    detail: dict[str, Any] = rows[-1]["detail"]
    return detail


def overdue_by(conn: Conn, days: int, *devices: str) -> date:
    """Make the open assignments of ``devices`` (started 30 days ago by ``seed``) overdue by
    ``days``; the planned last day."""
    planned = today() - timedelta(days=days)
    conn.execute("UPDATE assignments SET planned_until = %s"
                 " WHERE device_id = ANY(%s) AND valid_to IS NULL", (planned, list(devices)))
    conn.commit()
    return planned


# --- the planned end --------------------------------------------------------------------------


def test_assign_with_until_stores_it_and_the_history_says_it(conn: Conn, fleet: Fleet) -> None:
    until = today() + timedelta(days=90)
    row = service.assign(conn, SECRET, device_id=fleet.unpaired, patient="p-9", basis="SoL",
                         actor="tech-1", prescribing_unit="Mora", until=until)
    assert row["planned_until"] == until.isoformat()
    stored = conn.execute("SELECT planned_until FROM assignments WHERE id = %s",
                          (row["assignment_id"],)).fetchone()
    assert stored == (until,)
    detail = history(conn, fleet.unpaired, "assigned")
    assert detail["planned_until"] == until.isoformat()
    assert "reason" not in detail


def test_assign_until_today_is_allowed(conn: Conn, fleet: Fleet) -> None:
    row = service.assign(conn, SECRET, device_id=fleet.unpaired, patient="p-9", basis="HSL",
                         actor="tech-1", until=today())
    assert row["planned_until"] == today().isoformat()


def test_assign_without_until_leaves_it_open(conn: Conn, fleet: Fleet) -> None:
    row = service.assign(conn, SECRET, device_id=fleet.unpaired, patient="p-9", basis="HSL",
                         actor="tech-1")
    assert "planned_until" not in row
    assert conn.execute("SELECT planned_until FROM assignments WHERE id = %s",
                        (row["assignment_id"],)).fetchone() == (None,)
    assert "planned_until" not in history(conn, fleet.unpaired, "assigned")


def test_an_until_in_the_past_is_refused_naming_it(conn: Conn, fleet: Fleet) -> None:
    past = today() - timedelta(days=1)
    with pytest.raises(InvalidInputError) as refused:
        service.assign(conn, SECRET, device_id=fleet.unpaired, patient="p-9", basis="HSL",
                       actor="tech-1", until=past)
    message = str(refused.value)
    assert "until" in message and past.isoformat() in message
    assert today().isoformat() in message
    assert service.get_device(conn, fleet.unpaired)["state"] == "in_stock"
    assert conn.execute("SELECT count(*) FROM assignments WHERE device_id = %s",
                        (fleet.unpaired,)).fetchone() == (0,)


def test_the_table_refuses_a_planned_end_before_the_start(conn: Conn, fleet: Fleet) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        conn.execute("UPDATE assignments SET planned_until ="
                     " (valid_from AT TIME ZONE 'Europe/Stockholm')::date - 1"
                     " WHERE device_id = %s", (fleet.cuff,))
    conn.rollback()
    assert refused.value.diag.constraint_name == "assignments_planned_until_after_start"
    conn.execute("UPDATE assignments SET planned_until ="
                 " (valid_from AT TIME ZONE 'Europe/Stockholm')::date WHERE device_id = %s",
                 (fleet.cuff,))


# --- the overdue report -----------------------------------------------------------------------


def test_overdue_lists_devices_past_their_planned_end_per_principal(
        conn: Conn, fleet: Fleet) -> None:
    planned = overdue_by(conn, 5, fleet.cuff, fleet.other_cuff)
    conn.execute("UPDATE assignments SET prescribing_unit = 'Falu lasarett'"
                 " WHERE device_id = %s", (fleet.cuff,))
    own = reports.overdue_assignments(conn, principal="20")
    assert own == [{"device_id": fleet.cuff, "principal": "20", "model": "bpm",
                    "unit": "Falu lasarett", "planned_until": planned.isoformat(),
                    "days_overdue": 5}]
    everyone = reports.overdue_assignments(conn)
    # The same planned end: by principal, then device.
    assert [row["device_id"] for row in everyone] == [fleet.cuff, fleet.other_cuff]
    text = reports.to_csv("overdue", own)
    assert text.splitlines() == [
        OVERDUE_HEADER, f"{fleet.cuff},20,bpm,Falu lasarett,{planned.isoformat()},5"]
    # No patient reference in either form.
    assert fleet.patient not in json.dumps(everyone) and "patient" not in text


def test_overdue_leaves_out_returned_and_not_yet_due(conn: Conn, fleet: Fleet) -> None:
    overdue_by(conn, 2, fleet.cuff)
    assert reports.overdue_assignments(conn, principal="20") != []
    # Due today is not overdue yet.
    assert reports.overdue_assignments(conn, principal="20",
                                       today=today() - timedelta(days=2)) == []
    conn.execute("UPDATE assignments SET valid_to = now() WHERE device_id = %s", (fleet.cuff,))
    conn.execute("UPDATE devices SET state = 'returned' WHERE id = %s", (fleet.cuff,))
    assert reports.overdue_assignments(conn, principal="20") == []


def _cli(database_url: str, home: Path, *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env={
        "AIDLINK_DATABASE_URL": database_url, "AIDLINK_HOME": str(home),
        "AIDLINK_SECRET": "s" * 40})
    assert result.exit_code == 0, result.output
    return result.output


def test_overdue_report_on_the_command_line(conn: Conn, fleet: Fleet, database_url: str,
                                            tmp_path: Path) -> None:
    planned = overdue_by(conn, 3, fleet.cuff, fleet.other_cuff)
    lines = _cli(database_url, tmp_path, "report", "overdue", "--principal", "20").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"device_id": fleet.cuff, "principal": "20", "model": "bpm", "unit": None,
         "planned_until": planned.isoformat(), "days_overdue": 3}]
    text = _cli(database_url, tmp_path, "report", "overdue", "--principal", "2080", "--csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(row["device_id"], row["days_overdue"]) for row in rows] == [(fleet.other_cuff, "3")]
    assert text.splitlines()[0] == OVERDUE_HEADER


def test_overdue_report_over_the_api_shows_the_callers_principal_only(
        conn: Conn, fleet: Fleet, database_url: str) -> None:
    planned = overdue_by(conn, 4, fleet.cuff, fleet.other_cuff)
    with api_client(database_url) as api:
        own = api.get("/v1/reports/overdue", headers=TECH_20)
        assert own.status_code == 200, own.text
        assert own.json() == {"report": "overdue", "items": [
            {"device_id": fleet.cuff, "principal": "20", "model": "bpm", "unit": None,
             "planned_until": planned.isoformat(), "days_overdue": 4}]}
        other = api.get("/v1/reports/overdue?format=csv", headers=TECH_2080)
        assert other.status_code == 200, other.text
        assert other.headers["content-type"].startswith("text/csv")
        assert other.text.splitlines() == [
            OVERDUE_HEADER, f"{fleet.other_cuff},2080,bpm,,{planned.isoformat()},4"]
        refused = api.get("/v1/reports/overdue?principal=2080", headers=TECH_20)
        assert refused.status_code == 403, refused.text


# --- reasons ----------------------------------------------------------------------------------


def test_reasons_are_recorded_for_onboard_pair_and_assign(conn: Conn, fleet: Fleet) -> None:
    made = service.onboard_device(conn, principal="20", model="bpm", serial="R1", actor="t",
                                  reason=" replacement stock ")
    device = made["device_id"]
    service.pair(conn, peripheral_id=device, hub_id=fleet.hub, actor="t",
                 reason="patient has this hub")
    service.assign(conn, SECRET, device_id=device, patient="p-7", basis="HSL", actor="t",
                   reason="discharged with home monitoring")
    assert history(conn, device, "onboarded")["reason"] == "replacement stock"
    assert history(conn, device, "paired")["reason"] == "patient has this hub"
    assert history(conn, device, "assigned")["reason"] == "discharged with home monitoring"


def test_an_empty_reason_is_refused_and_none_is_left_out(conn: Conn, fleet: Fleet) -> None:
    with pytest.raises(InvalidInputError, match="reason"):
        service.pair(conn, peripheral_id=fleet.unpaired, hub_id=fleet.hub, actor="t",
                     reason="   ")
    service.pair(conn, peripheral_id=fleet.unpaired, hub_id=fleet.hub, actor="t")
    assert "reason" not in history(conn, fleet.unpaired, "paired")
    assert "reason" not in history(conn, fleet.unpaired, "onboarded")


def test_until_and_reasons_on_the_command_line(conn: Conn, fleet: Fleet, database_url: str,
                                               tmp_path: Path) -> None:
    until = today() + timedelta(days=30)
    made = json.loads(_cli(database_url, tmp_path, "device", "onboard", "--principal", "20",
                           "--model", "bpm", "--serial", "R2", "--reason", "new stock"))
    device = made["device_id"]
    _cli(database_url, tmp_path, "device", "pair", device, "--hub", fleet.hub,
         "--reason", "same home as the hub")
    row = json.loads(_cli(database_url, tmp_path, "device", "assign", device, "--patient",
                          "p-8", "--basis", "HSL", "--until", until.isoformat(),
                          "--reason", "trial period"))
    assert row["planned_until"] == until.isoformat()
    lines = _cli(database_url, tmp_path, "device", "history", device).splitlines()
    by_action = {entry["action"]: entry["detail"] for entry in map(json.loads, lines)}
    assert by_action["onboarded"]["reason"] == "new stock"
    assert by_action["paired"]["reason"] == "same home as the hub"
    assert by_action["assigned"]["reason"] == "trial period"
    assert by_action["assigned"]["planned_until"] == until.isoformat()
    past = (today() - timedelta(days=1)).isoformat()
    refused = CliRunner().invoke(main, ["device", "assign", fleet.unpaired, "--patient", "p",
                                        "--basis", "HSL", "--until", past],
                                 env={"AIDLINK_DATABASE_URL": database_url,
                                      "AIDLINK_HOME": str(tmp_path),
                                      "AIDLINK_SECRET": "s" * 40})
    assert refused.exit_code != 0
    assert "until" in refused.output and past in refused.output


def test_until_and_reasons_over_the_api(conn: Conn, fleet: Fleet, database_url: str) -> None:
    until = today() + timedelta(days=14)
    with api_client(database_url) as api:
        made = api.post("/v1/devices", json={"model": "bpm", "serial": "R3",
                                             "reason": "spare for ward 4"}, headers=TECH_20)
        assert made.status_code == 201, made.text
        device = made.json()["device_id"]
        paired = api.post(f"/v1/devices/{device}/pair",
                          json={"hub": fleet.hub, "reason": "hub already at home"},
                          headers=TECH_20)
        assert paired.status_code == 200, paired.text
        past = api.post(f"/v1/devices/{device}/assign",
                        json={"patient": "p-6", "basis": "HSL",
                              "until": (today() - timedelta(days=3)).isoformat()},
                        headers=TECH_20)
        assert past.status_code == 422, past.text
        assert "until" in past.json()["detail"]
        assigned = api.post(f"/v1/devices/{device}/assign",
                            json={"patient": "p-6", "basis": "HSL", "until": until.isoformat(),
                                  "reason": "two weeks after surgery"}, headers=TECH_20)
        assert assigned.status_code == 200, assigned.text
        assert assigned.json()["planned_until"] == until.isoformat()
        rows = api.get(f"/v1/devices/{device}/history", headers=TECH_20).json()
    by_action = {row["action"]: row["detail"] for row in rows}
    assert by_action["onboarded"]["reason"] == "spare for ward 4"
    assert by_action["paired"]["reason"] == "hub already at home"
    assert by_action["assigned"] == {**by_action["assigned"],
                                     "reason": "two weeks after surgery",
                                     "planned_until": until.isoformat()}
