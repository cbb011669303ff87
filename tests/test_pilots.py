"""New device models are piloted before rollout: onboarding outside a pilot's principals and
units or beyond its maximum is refused naming the rule; promotion is recorded with who and why;
the pilot report is computed from the stored readings, dead letters, events and returns.
Against a real PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.types.json import Jsonb

from gateway.auth import Role
from gateway.cli import main
from provisioning import bulk, lifecycle, pilot_report, pilots, service
from provisioning.errors import ConflictError
from tests.support import SECRET, api_client, bearer, seed

MODEL = "pilot-cuff"


def _onboard(conn: psycopg.Connection[Any], principal: str, serial: str,
             unit: str | None = None) -> str:
    made = service.onboard_device(conn, principal=principal, model=MODEL, serial=serial,
                                  actor="t", unit=unit)
    return str(made["device_id"])


def test_onboarding_outside_a_pilot_is_refused_naming_the_rule(database_url: str) -> None:
    seed(database_url)
    with psycopg.connect(database_url) as conn:
        _onboard(conn, "2080", "before")  # no stage row yet: general use
        pilots.set_pilot(conn, MODEL, principals=["20"], units=["Falu vårdcentral"],
                         max_devices=3, actor="cli:anna")
        with pytest.raises(pilots.PilotError,
                           match=r"principal 2080 with no unit is outside it"
                                 r" \(pilot rule: participants\)"):
            _onboard(conn, "2080", "S1")
        _onboard(conn, "20", "S2")
        _onboard(conn, "2080", "S3", unit="Falu vårdcentral")
        # The device onboarded before the pilot counts: three are in service now.
        with pytest.raises(pilots.PilotError, match=r"at most 3 devices.*max_devices"):
            _onboard(conn, "20", "S4")
        result = bulk.onboard_csv(conn, b"unused-passphrase-for-passwords",
                                  f"principal,model,serial\n20,{MODEL},S5\n", actor="t")
        assert result.refused[0]["reason"].startswith("line 2: refused by pilot: model")
        history = service.history(conn, service.get_device(conn, _first(conn, "S3"))["id"])
    assert history[0]["detail"]["unit"] == "Falu vårdcentral"


def _first(conn: psycopg.Connection[Any], serial: str) -> str:
    row = conn.execute("SELECT id FROM devices WHERE serial = %s", (serial,)).fetchone()
    assert row is not None
    return str(row[0])


def test_promotion_is_recorded_and_lifts_the_limits(database_url: str) -> None:
    seed(database_url)
    with psycopg.connect(database_url) as conn:
        pilots.set_pilot(conn, MODEL, principals=["20"], max_devices=1, actor="cli:anna",
                         reason="first municipality")
        _onboard(conn, "20", "P1")
        with pytest.raises(pilots.PilotError):
            _onboard(conn, "20", "P2")
        promoted = pilots.promote(conn, MODEL, actor="cli:bo", reason="no complaints in 3 months")
        assert promoted["stage"] == "general"
        assert [(h["stage"], h["actor"], h["reason"]) for h in promoted["history"]] == [
            ("pilot", "cli:anna", "first municipality"),
            ("general", "cli:bo", "no complaints in 3 months")]
        _onboard(conn, "2080", "P3")
        with pytest.raises(ConflictError, match="promoted already"):
            pilots.promote(conn, MODEL, actor="t", reason="again")
        with pytest.raises(ConflictError, match="cannot go back to pilot"):
            pilots.set_pilot(conn, MODEL, principals=["20"], actor="t")
        assert pilots.describe(conn, "never-piloted")["stage"] == "general"


def test_the_pilot_report_counts_from_the_real_tables(database_url: str) -> None:
    seed(database_url)
    now = datetime.now(UTC).replace(microsecond=0)
    with psycopg.connect(database_url) as conn:
        pilots.set_pilot(conn, MODEL, principals=["20", "2080"], actor="t")
        cuff, other = _onboard(conn, "20", "R1"), _onboard(conn, "2080", "R2")
        # Backdated, so the pilot period (from its start) covers the stored figures below.
        conn.execute("UPDATE model_stage_history SET at = %s", (now - timedelta(days=10),))
        conn.execute("UPDATE devices SET created_at = %s WHERE id IN (%s, %s)",
                     (now - timedelta(days=10), cuff, other))
        for month in {now, now - timedelta(days=1)}:
            conn.execute("SELECT aidlink_ensure_observation_partition(%s)", (month,))
        for hour in range(20):
            conn.execute(
                "INSERT INTO observations (ts, device_id, code, principal_code, value, unit,"
                " channel, received_at) VALUES (%s, %s, '8867-4', '20', 70, '/min', 'ble/2a35',"
                " %s)", (now - timedelta(hours=hour + 1), cuff, now))
        conn.execute(
            "INSERT INTO dead_letters (topic, client_id, device_id, principal_code, channel,"
            " payload, payload_sha256, reason, detail, times) VALUES ('t', %s, %s, '20',"
            " 'ble/2a35', '\\x00', '\\x01', 'decode_error', 'short', 3)", (cuff, cuff))
        events = [("device.offline", 30, {}), ("device.online", 27, {}),
                  ("device.offline", 2, {}), ("device.battery", 20, {"level": 5}),
                  ("device.battery", 19, {"level": 90}), ("device.battery_low", 18, {})]
        for kind, hours_ago, data in events:
            conn.execute(
                "INSERT INTO events (occurred_at, device_id, principal_code, type, data,"
                " channel, device_time, received_at) VALUES (%s, %s, '20', %s, %s, 'status',"
                " false, %s)", (now - timedelta(hours=hours_ago), cuff, kind, Jsonb(data), now))
        service.assign(conn, SECRET, device_id=cuff, patient="p-1", basis="HSL", actor="t")
        lifecycle.return_device(conn, device_id=cuff, actor="t", reason="cuff too small")
        rows = pilot_report.pilot_report(conn, MODEL, until=now + timedelta(minutes=5))
        own = pilot_report.pilot_report(conn, MODEL, principal="2080",
                                        until=now + timedelta(minutes=5))
    by_device = {row["device_id"]: row for row in rows}
    mine = by_device[cuff]
    assert (mine["readings"], mine["decode_rejects"], mine["returns"]) == (20, 3, 1)
    # Offline 30 h to 27 h ago, and again for the last 2 h 5 min of the period.
    assert mine["offline_hours"] == pytest.approx(5.08, abs=0.01)
    # A level below the threshold of a model without a profile does not count; the alarm
    # units' outright low-battery event does.
    assert mine["low_battery_events"] == 1
    assert mine["readings_per_day"] == pytest.approx(2.0, abs=0.01)
    assert by_device[other]["readings"] == 0
    total = by_device[None]
    assert (total["readings"], total["decode_rejects"], total["returns"]) == (20, 3, 1)
    assert [row["device_id"] for row in own] == [other, None]


def _cli(url: str, home: Path, *args: str, code: int = 0) -> str:
    env = {"AIDLINK_DATABASE_URL": url, "AIDLINK_HOME": str(home), "AIDLINK_SECRET": "s" * 40,
           "USER": "anna"}
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == code, result.output
    return result.output


def test_model_commands(database_url: str, tmp_path: Path) -> None:
    seed(database_url)
    piloted = json.loads(_cli(database_url, tmp_path, "model", "pilot", MODEL, "--principal",
                              "2080", "--unit", "U1", "--max", "5"))
    assert (piloted["stage"], piloted["principals"], piloted["units"],
            piloted["max_devices"]) == ("pilot", ["2080"], ["U1"], 5)
    refused = _cli(database_url, tmp_path, "device", "onboard", "--principal", "20", "--model",
                   MODEL, "--serial", "C1", code=1)
    assert "pilot rule: participants" in refused
    _cli(database_url, tmp_path, "device", "onboard", "--principal", "20", "--model", MODEL,
         "--serial", "C2", "--unit", "U1")
    listed = [json.loads(line) for line in _cli(database_url, tmp_path, "model",
                                                "list").splitlines()]
    assert [(m["model"], m["devices_in_service"]) for m in listed] == [(MODEL, 1)]
    promoted = json.loads(_cli(database_url, tmp_path, "model", "promote", MODEL, "--reason",
                               "works"))
    assert promoted["history"][-1]["reason"] == "works"
    assert promoted["history"][-1]["actor"].startswith("cli:")
    text = _cli(database_url, tmp_path, "report", "pilot", MODEL, "--csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["principal"], r["stage"]) for r in rows] == [("20", "general"), ("", "general")]


def test_pilot_routes(database_url: str) -> None:
    seed(database_url)
    with api_client(database_url, ca_passphrase=b"pilot-test-ca-passphrase") as api:
        admin, tech = bearer("20", Role.ADMIN), bearer("2080", Role.TECHNICIAN)
        body = {"principals": ["20"], "max_devices": 2, "reason": "trial"}
        assert api.put(f"/v1/models/{MODEL}/pilot", headers=tech, json=body).status_code == 403
        made = api.put(f"/v1/models/{MODEL}/pilot", headers=admin, json=body)
        assert made.status_code == 200, made.text
        refused = api.post("/v1/devices", headers=tech, json={"model": MODEL, "serial": "A1"})
        assert refused.status_code == 422 and "pilot rule: participants" in refused.text
        seen = api.get("/v1/models", headers=tech).json()["items"]
        # A technician learns whether its own principal takes part, not who else does.
        assert seen[0]["principals"] == []
        report = api.get("/v1/reports/pilot", headers=admin,
                         params={"model": MODEL, "format": "csv"})
        assert report.status_code == 200
        assert report.text.splitlines()[0] == ",".join(pilot_report.COLUMNS)
        promoted = api.post(f"/v1/models/{MODEL}/promote", headers=admin,
                            json={"reason": "ready"})
        assert promoted.status_code == 200 and promoted.json()["stage"] == "general"
        shown = api.get(f"/v1/models/{MODEL}", headers=admin).json()
        assert shown["history"][-1]["actor"] == "api:test-admin"
