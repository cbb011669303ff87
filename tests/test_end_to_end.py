"""Simulator -> real Mosquitto -> gateway -> real PostgreSQL -> API, on real components."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from fhir.resources.bundle import Bundle
from fhir.resources.observation import Observation as FhirObservation
from prometheus_client import REGISTRY

from gateway.auth import Role
from gateway.services.mosquitto import MosquittoProcess
from gateway.services.postgres import PostgresProcess
from provisioning import service
from provisioning.policy import fleet_check, set_policy
from simulators.bpm import BpReading, encode
from simulators.hub import Hub
from tests.support import api_client, bearer, count, running_gateway, seed, wait_for

MDC = "urn:iso:std:iso:11073:10101"
LOINC = "http://loinc.org"


def _reading(at: datetime, systolic: int = 128) -> bytes:
    return encode(BpReading(systolic=Decimal(systolic), diastolic=Decimal(82),
                            mean=Decimal("97.3"), pulse=Decimal(64), measured_at=at,
                            user_id=1, status=0x0004))


def _observations(url: str) -> int:
    return count(url, "SELECT count(*) FROM observations")


def test_cuff_reading_reaches_the_clinician_as_fhir(database_url: str,
                                                     mosquitto: MosquittoProcess) -> None:
    fleet = seed(database_url)
    measured = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    with running_gateway(database_url, mosquitto.url):
        hub = Hub(mosquitto.url, fleet.hub)
        hub.connect()
        try:
            hub.publish(fleet.cuff, "ble/2a35", _reading(measured))
        finally:
            hub.close()
        wait_for(lambda: _observations(database_url) == 4, what="four stored values")
    with api_client(database_url) as client:
        response = client.get("/fhir/r4/Observation",
                              params={"subject": f"Patient/{fleet.patient}"},
                              headers=bearer("20"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    bundle = Bundle.model_validate(body)
    assert bundle.type == "searchset"
    assert bundle.entry is not None
    resources = [FhirObservation.model_validate(e["resource"]) for e in body["entry"]]
    by_loinc = {next(c.code for c in o.code.coding or [] if c.system == LOINC): o
                for o in resources}
    # One blood-pressure panel with three components, and the pulse rate on its own.
    assert set(by_loinc) == {"85354-9", "8867-4"}
    panel = by_loinc["85354-9"]
    assert [(c.system, c.code) for c in panel.code.coding or []] == [
        (MDC, "150020"), (LOINC, "85354-9")]
    components = {next(c.code for c in comp.code.coding or [] if c.system == LOINC): comp
                  for comp in panel.component or []}
    assert list(components) == ["8480-6", "8462-4", "8478-0"]
    systolic = components["8480-6"]
    assert [(c.system, c.code) for c in systolic.code.coding or []] == [
        (MDC, "150021"), (LOINC, "8480-6")]
    assert systolic.valueQuantity is not None
    assert systolic.valueQuantity.value == Decimal(128)
    assert systolic.valueQuantity.code == "mm[Hg]"
    assert systolic.valueQuantity.system == "http://unitsofmeasure.org"
    assert panel.effectiveDateTime == measured
    assert panel.device is not None
    assert panel.device.reference == f"Device/{fleet.cuff}"
    assert panel.subject is not None
    assert panel.subject.reference == f"Patient/{fleet.patient}"
    assert components["8478-0"].valueQuantity is not None
    assert '"value":97.3,' in response.text
    pulse = by_loinc["8867-4"]
    assert pulse.valueQuantity is not None
    assert pulse.valueQuantity.code == "/min"
    assert [n.text for n in pulse.note or []] == ["device flags: irregular_pulse"]
    # The read was logged, in the principal's own access log.
    assert count(database_url, "SELECT count(*) FROM access_log WHERE principal_code = '20'"
                 " AND action = 'fhir.Observation.search'") == 1


def test_bad_and_unauthorised_messages_are_dead_letters_and_ingestion_goes_on(
        database_url: str, mosquitto: MosquittoProcess) -> None:
    fleet = seed(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE devices SET state = 'retired' WHERE id = %s", (fleet.other_cuff,))
    now = datetime.now(UTC).replace(microsecond=0)
    reasons = ("decode_error", "unpaired_peripheral", "unknown_channel", "unknown_client",
               "retired_device")
    before = {reason: _dead_letter_count(reason) for reason in reasons}
    with running_gateway(database_url, mosquitto.url):
        hub = Hub(mosquitto.url, fleet.hub)
        stranger = Hub(mosquitto.url, "dev-nobody")
        other = Hub(mosquitto.url, fleet.other_hub)
        for client in (hub, stranger, other):
            client.connect()
        try:
            hub.publish(fleet.cuff, "ble/2a35", bytes.fromhex("1e0100"))  # truncated
            hub.publish(fleet.unpaired, "ble/2a35", _reading(now))  # not paired with hub
            hub.publish(fleet.other_cuff, "ble/2a35", _reading(now))  # another principal's
            hub.publish(fleet.cuff, "ble/ffff", b"\x01")  # no such adapter
            stranger.publish(fleet.cuff, "ble/2a35", _reading(now))  # unknown client
            other.publish(fleet.other_cuff, "ble/2a35", _reading(now))  # retired device
            hub.publish(fleet.cuff, "ble/2a35", _reading(now))  # and a good one after all that
        finally:
            for client in (hub, stranger, other):
                client.close()
        wait_for(lambda: _observations(database_url) == 4, what="the good reading")
        wait_for(lambda: count(database_url, "SELECT count(*) FROM dead_letters") == 6,
                 what="six dead letters")
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT reason, device_id, payload FROM dead_letters ORDER BY id").fetchall()
    # One hub's messages keep their order; different clients' may be stored in either order
    # (the gateway's writer lanes are chosen by client id).
    assert sorted((r[0], r[1]) for r in rows) == sorted([
        ("decode_error", fleet.cuff),
        ("unpaired_peripheral", fleet.unpaired),
        ("unpaired_peripheral", fleet.other_cuff),
        ("unknown_channel", fleet.cuff),
        ("unknown_client", fleet.cuff),
        ("retired_device", fleet.other_cuff),
    ])
    assert [r[0] for r in rows if r[0] != "unknown_client" and r[0] != "retired_device"] == [
        "decode_error", "unpaired_peripheral", "unpaired_peripheral", "unknown_channel"]
    assert [r[2] for r in rows if r[0] == "decode_error"] == [bytes.fromhex("1e0100")]
    counted = {reason: _dead_letter_count(reason) - before[reason] for reason in reasons}
    assert counted == {"decode_error": 1, "unpaired_peripheral": 2, "unknown_channel": 1,
                       "unknown_client": 1, "retired_device": 1}


def _dead_letter_count(reason: str) -> float:
    value = REGISTRY.get_sample_value("aidlink_dead_letters_total", {"reason": reason})
    return 0.0 if value is None else value


def test_the_same_message_delivered_twice_is_stored_once(database_url: str,
                                                         mosquitto: MosquittoProcess) -> None:
    fleet = seed(database_url)
    payload = _reading(datetime.now(UTC).replace(microsecond=0))
    with running_gateway(database_url, mosquitto.url) as gateway:
        hub = Hub(mosquitto.url, fleet.hub)
        hub.connect()
        try:
            hub.publish(fleet.cuff, "ble/2a35", payload)
            hub.publish(fleet.cuff, "ble/2a35", payload)
        finally:
            hub.close()
        wait_for(lambda: gateway.totals.messages == 2, what="both deliveries")
    assert _observations(database_url) == 4
    assert gateway.totals.observations_new == 4


def test_a_message_is_not_acknowledged_until_the_database_has_it(
        database_url: str, mosquitto: MosquittoProcess, pg_server: PostgresProcess) -> None:
    fleet = seed(database_url)
    payload = _reading(datetime.now(UTC).replace(microsecond=0))
    first = running_gateway(database_url, mosquitto.url)
    gateway = first.__enter__()
    try:
        pg_server.stop()
        hub = Hub(mosquitto.url, fleet.hub)
        hub.connect()
        try:
            hub.publish(fleet.cuff, "ble/2a35", payload)
        finally:
            hub.close()
        wait_for(lambda: gateway.health()["status"] == "degraded", what="degraded health")
        assert any("database" in r for r in gateway.health()["reasons"])
    finally:
        # The gateway goes away while the database is down: the message was never
        # acknowledged, so the broker keeps it in the gateway's persistent session.
        first.__exit__(None, None, None)
    pg_server.start()
    assert _observations(database_url) == 0
    with running_gateway(database_url, mosquitto.url) as second:
        wait_for(lambda: _observations(database_url) == 4, what="the redelivered reading")
        # The writer counts a batch just after its commit, so the count may trail the rows.
        wait_for(lambda: second.totals.stored_messages or None, what="the batch counted")
        assert second.totals.stored_messages == 1


def test_a_token_of_another_principal_gets_nothing_of_the_patient(
        database_url: str, mosquitto: MosquittoProcess) -> None:
    fleet = seed(database_url)
    with running_gateway(database_url, mosquitto.url):
        hub = Hub(mosquitto.url, fleet.hub)
        hub.connect()
        try:
            hub.publish(fleet.cuff, "ble/2a35", _reading(datetime.now(UTC).replace(microsecond=0)))
        finally:
            hub.close()
        wait_for(lambda: _observations(database_url) == 4, what="the reading")
    falun = bearer("2080")
    with api_client(database_url) as client:
        fhir = client.get("/fhir/r4/Observation",
                          params={"subject": f"Patient/{fleet.patient}"}, headers=falun)
        plain = client.get("/v1/observations", params={"patient": fleet.patient},
                           headers=falun)
        by_device = client.get("/v1/observations", params={"device": fleet.cuff},
                               headers=falun)
        device = client.get(f"/fhir/r4/Device/{fleet.cuff}", headers=falun)
        own = client.get("/v1/observations", params={"patient": fleet.patient},
                         headers=bearer("20"))
        technician = client.get("/v1/observations", params={"patient": fleet.patient},
                                headers=bearer("20", Role.TECHNICIAN))
    assert fhir.status_code == 200
    assert fhir.json().get("entry", []) == []
    assert plain.json() == {"items": [], "next_cursor": None}
    assert by_device.json() == {"items": [], "next_cursor": None}
    assert device.status_code == 404
    assert device.json()["resourceType"] == "OperationOutcome"
    assert len(own.json()["items"]) == 4
    assert technician.status_code == 403


def _status(at: datetime, firmware: str) -> bytes:
    return json.dumps({"v": 1, "type": "device_status", "at": at.isoformat(),
                       "firmware": firmware, "battery_percent": 80}).encode()


def test_a_reported_firmware_updates_the_registry_and_the_policy_check(
        database_url: str, mosquitto: MosquittoProcess) -> None:
    fleet = seed(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE devices SET firmware_version = '1.0' WHERE id = %s", (fleet.cuff,))
        set_policy(conn, "20", {"device_auth": "password", "min_firmware": {"bpm": "2.0"}},
                   "test")
        too_old = [f["device_id"] for f in fleet_check(conn, "20")
                   if any("below the minimum 2.0" in r for r in f["reasons"])]
    assert too_old == [fleet.cuff]
    now = datetime.now(UTC).replace(microsecond=0)
    with running_gateway(database_url, mosquitto.url):
        hub = Hub(mosquitto.url, fleet.hub)
        hub.connect()
        try:
            hub.publish(fleet.cuff, "status", _status(now, "2.1.0"))
            wait_for(lambda: _firmware(database_url, fleet.cuff) == "2.1.0", what="new firmware")
            # The same version again changes nothing; an older status (a hub emptying its
            # store) does not turn the version back.
            hub.publish(fleet.cuff, "status", _status(now + timedelta(seconds=1), "2.1.0"))
            wait_for(lambda: _statuses(database_url, fleet.cuff) == 2, what="the second status")
            hub.publish(fleet.cuff, "status", _status(now - timedelta(hours=1), "1.0"))
            wait_for(lambda: _statuses(database_url, fleet.cuff) == 3, what="the third status")
        finally:
            hub.close()
    with psycopg.connect(database_url) as conn:
        findings = fleet_check(conn, "20")
        history = [row for row in service.history(conn, fleet.cuff)
                   if row["action"] == "firmware_reported"]
    assert _firmware(database_url, fleet.cuff) == "2.1.0"
    assert [f for f in findings if f["device_id"] == fleet.cuff] == []
    assert [(row["actor"], row["detail"]["old"], row["detail"]["new"]) for row in history] == [
        ("gateway", "1.0", "2.1.0")]
    assert datetime.fromisoformat(history[0]["detail"]["reported_at"]) == now


def _statuses(url: str, device: str) -> int:
    return count(url, "SELECT count(*) FROM events WHERE device_id = %s"
                      " AND type = 'device.status'", device)


def _firmware(url: str, device: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT firmware_version FROM devices WHERE id = %s",
                           (device,)).fetchone()
    return None if row is None else row[0]
