"""The FHIR R4 resources over a real PostgreSQL: blood-pressure panels with components, kept
precision, absent values, flags, Device, Patient, the CapabilityStatement and OperationOutcomes.
Every resource is validated with the R4B models of fhir.resources."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient

from gateway.auth import Role
from gateway.ingest.store import BatchStore, Incoming
from provisioning import service
from provisioning.patients import patient_key
from simulators.bpm import STATUS_BODY_MOVEMENT, BpReading
from tests.fhir_support import (
    LOINC,
    MDC,
    START,
    URL,
    by_loinc,
    error,
    hourly,
    partition,
    resources,
    search,
    store,
)
from tests.support import SECRET, Fleet, api_client, bearer, count, seed


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed(database_url)


@pytest.fixture
def client(database_url: str, fleet: Fleet) -> Iterator[TestClient]:
    with api_client(database_url) as api:
        yield api


def test_a_cuff_reading_is_a_panel_with_components_and_its_own_pulse(
        client: TestClient, fleet: Fleet, database_url: str) -> None:
    store(database_url, fleet, [BpReading(
        systolic=Decimal("120.5"), diastolic=Decimal(80), mean=Decimal("93.3"),
        pulse=Decimal(60), measured_at=START, status=STATUS_BODY_MOVEMENT)])
    response = client.get(URL, params={"subject": f"Patient/{fleet.patient}"},
                          headers=bearer("20"))
    body = response.json()
    Bundle.model_validate(body)
    found = by_loinc(body)
    assert len(found) == 2
    panel, pulse = found["85354-9"], found["8867-4"]
    Observation.model_validate(panel)
    Observation.model_validate(pulse)
    assert panel["code"]["coding"] == [
        {"system": MDC, "code": "150020", "display": "MDC_PRESS_BLD_NONINV"},
        {"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]
    assert "valueQuantity" not in panel
    assert [[(c["system"], c["code"]) for c in comp["code"]["coding"]]
            for comp in panel["component"]] == [
        [(MDC, "150021"), (LOINC, "8480-6")], [(MDC, "150022"), (LOINC, "8462-4")],
        [(MDC, "150023"), (LOINC, "8478-0")]]
    assert [c["valueQuantity"]["code"] for c in panel["component"]] == ["mm[Hg]"] * 3
    # The measured precision is kept in the JSON text: 120.5, 80 (not 80.0) and 93.3.
    assert '"value":120.5,' in response.text
    assert '"value":80,' in response.text
    assert '"value":93.3,' in response.text
    assert panel["status"] == "final"
    assert panel["effectiveDateTime"] == "2026-11-01T08:00:00Z"
    assert panel["device"] == {"reference": f"Device/{fleet.cuff}"}
    assert panel["subject"] == {"reference": f"Patient/{fleet.patient}"}
    assert panel["category"][0]["coding"][0]["code"] == "vital-signs"
    assert panel["note"] == [{"text": "device flags: body_movement"}]
    assert pulse["code"]["coding"][0]["code"] == "149546"
    assert pulse["valueQuantity"] == {"value": 60, "unit": "beats/min",
                                      "system": "http://unitsofmeasure.org", "code": "/min"}
    assert pulse["device"] == panel["device"]
    assert "meta" not in panel  # no profile is claimed


def test_trailing_zeros_of_a_stored_value_are_kept(client: TestClient, fleet: Fleet,
                                                   database_url: str) -> None:
    key = patient_key(SECRET, "20", fleet.patient)
    with psycopg.connect(database_url) as conn:
        partition(conn, START)
        for code, mdc, value in (("8480-6", 150021, "120.0"), ("8462-4", 150022, "80.50"),
                                 ("8478-0", 150023, "93")):
            conn.execute(
                "INSERT INTO observations (ts, device_id, code, principal_code, patient_key,"
                " mdc, value, unit, measured_at, panel, channel, received_at) VALUES"
                " (%s, %s, %s, '20', %s, %s, %s::numeric, 'mm[Hg]', %s, '85354-9',"
                " 'ble/2a35', %s)", (START, fleet.cuff, code, key, mdc, value, START, START))
    text = client.get(URL, params={"subject": fleet.patient}, headers=bearer("20")).text
    assert '"value":120.0,' in text
    assert '"value":80.50,' in text
    assert '"value":93,' in text


def test_special_values_become_component_absent_reasons(client: TestClient, fleet: Fleet,
                                                        database_url: str) -> None:
    # Systolic NaN (0x07FF), diastolic NRes (0x0800), MAP +INF (0x07FE): PHD IG mapping.
    with psycopg.connect(database_url) as conn:
        BatchStore(conn).write([Incoming(
            topic=f"aidlink/v1/{fleet.hub}/{fleet.cuff}/ble/2a35",
            payload=bytes.fromhex("00ff070008fe07"), received_at=datetime.now(UTC))])
    (panel,) = resources(search(client, fleet))
    Observation.model_validate(panel)
    assert [(c["code"]["coding"][1]["code"], c["dataAbsentReason"]["coding"][0]["code"])
            for c in panel["component"]] == [
        ("8480-6", "not-a-number"), ("8462-4", "error"), ("8478-0", "positive-infinity")]
    assert all("valueQuantity" not in c for c in panel["component"])
    assert panel["note"][-1]["text"].startswith("the device sent no time")


def test_flags_become_interpretations_where_a_code_fits_and_notes_always(
        client: TestClient, fleet: Fleet, database_url: str) -> None:
    key = patient_key(SECRET, "20", fleet.patient)
    with psycopg.connect(database_url) as conn:
        partition(conn, START)
        conn.execute(
            "INSERT INTO observations (ts, device_id, code, principal_code, patient_key, mdc,"
            " value, unit, measured_at, flags, channel, received_at) VALUES (%s, %s, '2339-0',"
            " '20', %s, 160184, 612, 'mg/dL', %s, '{result_above_range}', 'ble/2a18', %s)",
            (START, fleet.cuff, key, START, START))
    store(database_url, fleet, [BpReading(
        systolic=Decimal(350), diastolic=Decimal(80), mean=Decimal(90), pulse=Decimal(60),
        measured_at=START + timedelta(hours=1), status=0x0008)])  # pulse above range
    found = by_loinc(search(client, fleet))
    panel, pulse, glucose = found["85354-9"], found["8867-4"], found["2339-0"]
    assert glucose["interpretation"][0]["coding"][0]["code"] == ">"
    assert glucose["note"] == [{"text": "device flags: result_above_range"}]
    assert pulse["interpretation"][0]["coding"][0]["code"] == "H"
    assert "interpretation" not in panel
    assert [n["text"] for n in panel["note"]] == [
        "device flags: pulse_rate_above_range",
        "Systolic blood pressure (8480-6) flags: implausible"]
    for resource in (panel, pulse, glucose):
        Observation.model_validate(resource)


def test_auth_and_missing_resources_are_operation_outcomes(client: TestClient,
                                                           fleet: Fleet) -> None:
    none = client.get(URL, params={"subject": fleet.patient})
    assert "missing Authorization header" in error(none, 401)
    technician = client.get(URL, params={"subject": fleet.patient},
                            headers=bearer("20", Role.TECHNICIAN))
    assert "may not read patient data" in error(technician, 403)
    missing = client.get("/fhir/r4/Device/dev-nothere", headers=bearer("20"))
    assert "Device/dev-nothere not found" in error(missing, 404)
    codes = [OperationOutcome.model_validate(r.json()).issue[0].code
             for r in (none, technician, missing)]
    assert codes == ["login", "forbidden", "not-found"]


def test_device_read_names_model_serial_firmware_maker_and_owner(
        client: TestClient, fleet: Fleet, database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        made = service.onboard_device(conn, principal="20", model="sim-bpm", serial="S-77",
                                      actor="t", firmware_version="1.2.0")
    response = client.get(f"/fhir/r4/Device/{made['device_id']}",
                          headers=bearer("20", Role.TECHNICIAN))
    assert response.headers["content-type"].startswith("application/fhir+json")
    Device.model_validate(response.json())
    assert response.json() == {
        "resourceType": "Device", "id": made["device_id"], "status": "active",
        "manufacturer": "aidlink simulators", "serialNumber": "S-77", "modelNumber": "sim-bpm",
        "version": [{"type": {"text": "firmware"}, "value": "1.2.0"}],
        "owner": {"identifier": {"system": "urn:aidlink:principal:scb-code", "value": "20"},
                  "display": "Region Dalarna"}}
    plain = client.get(f"/fhir/r4/Device/{fleet.cuff}", headers=bearer("20")).json()
    assert (plain["modelNumber"], plain["serialNumber"]) == ("bpm", "C1")
    assert "manufacturer" not in plain and "version" not in plain
    foreign = client.get(f"/fhir/r4/Device/{fleet.cuff}", headers=bearer("2080"))
    assert "not found" in error(foreign, 404)


def test_patient_read_is_identifier_only_and_logged(client: TestClient, fleet: Fleet,
                                                    database_url: str) -> None:
    response = client.get(f"/fhir/r4/Patient/{fleet.patient}",
                          headers={**bearer("20"), "X-End-User": "nurse-anna"})
    assert response.status_code == 200
    Patient.model_validate(response.json())
    assert response.json() == {"resourceType": "Patient", "id": fleet.patient, "identifier": [
        {"use": "official", "system": "http://electronichealth.se/identifier/personnummer",
         "value": "191212121212"}]}
    with psycopg.connect(database_url) as conn:
        logged = conn.execute("SELECT end_user, action, patient_key FROM access_log").fetchall()
    assert logged == [("nurse-anna", "fhir.Patient.read",
                       patient_key(SECRET, "20", fleet.patient))]
    other = client.get(f"/fhir/r4/Patient/{fleet.other_patient}", headers=bearer("2080"))
    assert other.json()["identifier"] == [{"use": "usual", "value": fleet.other_patient,
                                           "system": "urn:aidlink:principal:2080:patient"}]
    # Principal 20 never had the other principal's patient, nor an unknown one.
    for ref in (fleet.other_patient, "nobody-1"):
        missing = client.get(f"/fhir/r4/Patient/{ref}", headers=bearer("20"))
        assert "never had a device assigned" in error(missing, 404)
    assert count(database_url, "SELECT count(*) FROM access_log") == 2


def test_metadata_advertises_only_what_is_accepted(client: TestClient, fleet: Fleet,
                                                   database_url: str) -> None:
    hourly(database_url, fleet, 1)
    response = client.get("/fhir/r4/metadata")
    assert response.headers["content-type"].startswith("application/fhir+json")
    statement = CapabilityStatement.model_validate(response.json())
    assert statement.fhirVersion == "4.0.1"
    assert statement.format == ["application/fhir+json"]
    (rest,) = statement.rest or []
    kinds = {r.type: [i.code for i in r.interaction or []] for r in rest.resource or []}
    assert kinds == {"Observation": ["search-type"], "Device": ["read"], "Patient": ["read"]}
    observation = next(r for r in rest.resource or [] if r.type == "Observation")
    examples = {"subject": f"Patient/{fleet.patient}", "code": f"{LOINC}|85354-9",
                "date": "ge2026-11-01", "device": f"Device/{fleet.cuff}", "_count": "5",
                "_sort": "-date"}
    names = [str(p.name) for p in observation.searchParam or []]
    assert sorted(names) == sorted(examples)
    for name in names:
        params = {"subject": fleet.patient, name: examples[name]}
        answer = client.get(URL, params=params, headers=bearer("20"))
        assert answer.status_code == 200, (name, answer.text)
        assert len(resources(answer.json())) >= 1, name
    assert statement.software is not None and statement.software.name == "aidlink"
    assert rest.security is not None and "SMART on FHIR is not supported" in (
        rest.security.description or "")
    # OAuth is claimed because the app serves the client-credentials token endpoint.
    assert [c.code for s in rest.security.service or [] for c in s.coding or []] == ["OAuth"]
    assert "http://testserver/oauth/token" in (rest.security.description or "")
