"""Swaps: a faulty cuff at a patient replaced by one from stock, and the patient's series
going on across both, on real PostgreSQL (and real Mosquitto and gateway end to end)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from gateway.auth import Role
from gateway.cli import main
from gateway.ingest.store import BatchStore, Incoming
from gateway.services.mosquitto import MosquittoProcess
from provisioning import service, swap
from provisioning.errors import ConflictError, InvalidInputError
from provisioning.patients import patient_key
from simulators.bpm import BpReading, encode
from simulators.hub import Hub
from tests.support import (
    SECRET,
    Fleet,
    api_client,
    bearer,
    count,
    running_gateway,
    seed,
    wait_for,
)

FAULT = "cuff does not inflate"


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed(database_url)


def _payload(at: datetime, systolic: int) -> bytes:
    return encode(BpReading(systolic=Decimal(systolic), diastolic=Decimal(80),
                            mean=Decimal(93), measured_at=at))


def _after_swap() -> datetime:
    # Whole seconds (as the cuff's clock has them) that are surely past the swap's moment.
    time.sleep(1.1)
    return datetime.now(UTC).replace(microsecond=0)


def _states(url: str, *devices: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [service.get_device(conn, d)["state"] for d in devices]


def test_a_swap_moves_the_assignment_and_returns_the_old_device_with_its_fault(
        database_url: str, fleet: Fleet) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE assignments SET prescribing_unit = 'Hemsjukvården Falun'"
                     " WHERE device_id = %s", (fleet.cuff,))
        result = swap.swap(conn, old_id=fleet.cuff, new_id=fleet.unpaired, fault=FAULT,
                           actor="t")
        rows = conn.execute(
            "SELECT device_id, patient_key, basis, prescribing_unit, valid_from, valid_to"
            " FROM assignments WHERE device_id = ANY(%s) ORDER BY valid_from",
            ([fleet.cuff, fleet.unpaired],)).fetchall()
        old_history = service.history(conn, fleet.cuff)
        new_history = service.history(conn, fleet.unpaired)
        hubs = conn.execute("SELECT peripheral_id FROM pairings WHERE hub_id = %s"
                            " AND unpaired_at IS NULL", (fleet.hub,)).fetchall()
    key = patient_key(SECRET, "20", fleet.patient)
    old, new = rows
    assert old[:4] == (fleet.cuff, key, "HSL", "Hemsjukvården Falun")
    assert new[:4] == (fleet.unpaired, key, "HSL", "Hemsjukvården Falun")
    # The same moment ends one and starts the other: no reading falls between them.
    assert old[5] == new[4] == result["old"]["valid_to"] == result["new"]["valid_from"]
    assert new[5] is None
    assert _states(database_url, fleet.cuff, fleet.unpaired) == ["returned", "assigned"]
    returned = old_history[-2]
    assert returned["action"] == "returned"
    assert returned["detail"]["fault"] == FAULT
    assert returned["detail"]["replaced_by"] == fleet.unpaired
    assigned = [h for h in new_history if h["action"] == "assigned"]
    assert assigned[0]["detail"]["replaces"] == fleet.cuff
    # The new cuff took the old one's place at the patient's hub.
    assert hubs == [(fleet.unpaired,)]
    assert result["hub"] == fleet.hub


@pytest.mark.parametrize(("old", "new", "error", "message"), [
    ("cuff", "other_hub", ConflictError, "belongs to principal 2080, not to principal 20"),
    ("cuff", "hub", ConflictError, "only a device in stock can replace"),
    ("unpaired", "hub", ConflictError, "only an assigned device can be swapped"),
    ("cuff", "cuff", InvalidInputError, "cannot replace itself"),
])
def test_a_swap_is_refused_naming_why_and_changes_nothing(
        database_url: str, fleet: Fleet, old: str, new: str, error: type[Exception],
        message: str) -> None:
    old_id, new_id = getattr(fleet, old), getattr(fleet, new)
    if new == "hub":
        with psycopg.connect(database_url) as conn:
            service.assign(conn, SECRET, device_id=fleet.hub, patient="p-9", basis="SoL",
                           actor="t")
    before = count(database_url, "SELECT count(*) FROM device_history")
    with psycopg.connect(database_url) as conn, pytest.raises(error, match=message):
        swap.swap(conn, old_id=old_id, new_id=new_id, fault=FAULT, actor="t")
    assert count(database_url, "SELECT count(*) FROM device_history") == before
    assert _states(database_url, fleet.cuff) == ["assigned"]


def test_a_new_device_that_needs_credentials_cannot_replace(database_url: str,
                                                            fleet: Fleet) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE devices SET needs_credentials = true WHERE id = %s",
                     (fleet.unpaired,))
    with psycopg.connect(database_url) as conn, pytest.raises(ConflictError,
                                                             match="needs new credentials"):
        swap.swap(conn, old_id=fleet.cuff, new_id=fleet.unpaired, fault=FAULT, actor="t")


def test_a_reading_right_after_a_swap_lands_on_the_patient(database_url: str,
                                                          fleet: Fleet) -> None:
    # The gateway's registry cache holds the old assignments until the trigger moves the
    # registry version; the swap runs on another connection, as a technician's would.
    key = patient_key(SECRET, "20", fleet.patient)
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)

    def reading(device: str, at: datetime, systolic: int) -> Incoming:
        return Incoming(topic=f"aidlink/v1/{fleet.hub}/{device}/ble/2a35",
                        payload=_payload(at, systolic), received_at=datetime.now(UTC))

    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)
        assert store.write([reading(fleet.cuff, before, 121)]).stored_messages == 1
        with psycopg.connect(database_url) as other:
            swap.swap(other, old_id=fleet.cuff, new_id=fleet.unpaired, fault=FAULT, actor="t")
        after = _after_swap()
        assert store.write([reading(fleet.unpaired, after, 122)]).stored_messages == 1
        rows = conn.execute(
            "SELECT device_id, patient_key FROM observations WHERE code = '8480-6'"
            " ORDER BY ts").fetchall()
    assert rows == [(fleet.cuff, key), (fleet.unpaired, key)]


def test_the_patients_series_goes_on_across_a_swap(database_url: str,
                                                   mosquitto: MosquittoProcess) -> None:
    fleet = seed(database_url)
    first = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    with running_gateway(database_url, mosquitto.url):
        hub = Hub(mosquitto.url, fleet.hub)
        hub.connect()
        try:
            hub.publish(fleet.cuff, "ble/2a35", _payload(first, 131))
            hub.publish(fleet.cuff, "ble/2a35", _payload(first + timedelta(minutes=1), 132))
            wait_for(lambda: count(database_url, "SELECT count(*) FROM observations"
                                   " WHERE device_id = %s", fleet.cuff) == 6,
                     what="the old cuff's readings")
            with api_client(database_url) as client:
                swapped = client.post(f"/v1/devices/{fleet.cuff}/swap",
                                      json={"new_device": fleet.unpaired, "fault": FAULT},
                                      headers=bearer("20", Role.TECHNICIAN))
            assert swapped.status_code == 200, swapped.text
            later = _after_swap()
            hub.publish(fleet.unpaired, "ble/2a35", _payload(later, 133))
            wait_for(lambda: count(database_url, "SELECT count(*) FROM observations"
                                   " WHERE device_id = %s AND patient_key IS NOT NULL",
                                   fleet.unpaired) == 3,
                     what="the new cuff's reading on the patient")
        finally:
            hub.close()
    with api_client(database_url) as client:
        bundle = client.get("/fhir/r4/Observation",
                            params={"subject": f"Patient/{fleet.patient}",
                                    "code": "http://loinc.org|85354-9", "_sort": "date"},
                            headers=bearer("20")).json()
        items = client.get("/v1/observations",
                           params={"patient": fleet.patient, "code": "8480-6"},
                           headers=bearer("20")).json()["items"]
    panels = [(e["resource"]["device"]["reference"], e["resource"]["effectiveDateTime"],
               _systolic(e["resource"])) for e in bundle["entry"]]
    assert panels == [
        (f"Device/{fleet.cuff}", _fhir_time(first), 131),
        (f"Device/{fleet.cuff}", _fhir_time(first + timedelta(minutes=1)), 132),
        (f"Device/{fleet.unpaired}", _fhir_time(later), 133)]
    assert [(i["device_id"], i["value"]) for i in items] == [
        (fleet.unpaired, 133), (fleet.cuff, 132), (fleet.cuff, 131)]


def _systolic(resource: dict[str, Any]) -> int:
    return int(next(c["valueQuantity"]["value"] for c in resource["component"]
                    if any(code["code"] == "8480-6" for code in c["code"]["coding"])))


def _fhir_time(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def test_the_api_and_the_command_line_swap_within_the_principal(
        database_url: str, fleet: Fleet, tmp_path: Path) -> None:
    with api_client(database_url) as client:
        # Another principal's device is "not found", as on every device route.
        foreign = client.post(f"/v1/devices/{fleet.cuff}/swap",
                              json={"new_device": fleet.other_hub, "fault": FAULT},
                              headers=bearer("20", Role.TECHNICIAN))
        assert foreign.status_code == 404, foreign.text
        assert f"device {fleet.other_hub} not found" in foreign.json()["detail"]
    env = {"AIDLINK_DATABASE_URL": database_url, "AIDLINK_HOME": str(tmp_path),
           "AIDLINK_SECRET": "s" * 40}
    result = CliRunner().invoke(main, ["device", "swap", fleet.cuff, "--new", fleet.unpaired,
                                       "--fault", FAULT], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["new"]["device_id"] == fleet.unpaired
    again = CliRunner().invoke(main, ["device", "swap", fleet.cuff, "--new", fleet.unpaired,
                                      "--fault", FAULT], env=env)
    assert again.exit_code == 1
    assert f"device {fleet.cuff} is returned; only an assigned device" in again.output
