"""The HTTP API over a real PostgreSQL: paging, filters, FHIR shape, errors and isolation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import jwt
import psycopg
import pytest
from fastapi.testclient import TestClient
from fhir.resources.bundle import Bundle
from fhir.resources.capabilitystatement import CapabilityStatement
from fhir.resources.observation import Observation as FhirObservation
from fhir.resources.operationoutcome import OperationOutcome

from gateway.auth import Role, SigningKey, issue_token
from gateway.ingest.store import BatchStore, Incoming
from gateway.token_keys import genesis_key
from simulators.bpm import BpReading, encode
from tests.support import SECRET, Fleet, api_client, bearer, count, seed

START = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def _store(url: str, fleet: Fleet, readings: int, *, start: datetime = START) -> None:
    """Store readings an hour apart through the real batch writer (no broker needed)."""
    batch = []
    for hour in range(readings):
        at = start + timedelta(hours=hour)
        payload = encode(BpReading(systolic=Decimal(120 + hour), diastolic=Decimal(80),
                                   mean=Decimal("93.3"), pulse=Decimal(60), measured_at=at))
        batch.append(Incoming(topic=f"aidlink/v1/{fleet.hub}/{fleet.cuff}/ble/2a35",
                              payload=payload, received_at=at + timedelta(seconds=2)))
    with psycopg.connect(url) as conn:
        store = BatchStore(conn)
        result = store.write(batch)
    assert result.stored_messages == readings


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed(database_url)


@pytest.fixture
def client(database_url: str, fleet: Fleet) -> Iterator[TestClient]:
    with api_client(database_url) as api:
        yield api


def test_plain_json_pages_newest_first_with_a_cursor(client: TestClient, fleet: Fleet,
                                                     database_url: str) -> None:
    _store(database_url, fleet, 3)
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"patient": fleet.patient, "code": "8480-6", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/v1/observations", params=params, headers=bearer("20")).json()
        seen.extend(body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 2
    assert [item["value"] for item in seen] == [122, 121, 120]
    assert seen[0] == {
        "kind": "observation", "code": "8480-6", "mdc": 150021, "value": 122,
        "unit": "mm[Hg]", "measured_at": "2026-11-01T10:00:00Z", "flags": [],
        "absent_reason": None, "panel": "85354-9", "device_user": None, "sequence": None,
        "device_id": fleet.cuff, "patient": fleet.patient,
        "received_at": "2026-11-01T10:00:02Z",
    }


def test_since_and_until_bound_the_plain_search(client: TestClient, fleet: Fleet,
                                                database_url: str) -> None:
    _store(database_url, fleet, 4)
    body = client.get("/v1/observations", headers=bearer("20"), params={
        "patient": fleet.patient, "code": "8480-6",
        "since": "2026-11-01T09:00:00Z", "until": "2026-11-01T11:00:00Z"}).json()
    assert [i["measured_at"] for i in body["items"]] == ["2026-11-01T10:00:00Z",
                                                        "2026-11-01T09:00:00Z"]


def test_fhir_search_by_code_and_date_with_next_links(client: TestClient, fleet: Fleet,
                                                      database_url: str) -> None:
    _store(database_url, fleet, 5)
    params: dict[str, Any] = {
        "subject": f"Patient/{fleet.patient}",
        "code": "urn:iso:std:iso:11073:10101|150022",
        "date": ["ge2026-11-01T09:00:00Z", "lt2026-11-01T12:00:00Z"],
        "_count": 2,
    }
    first = client.get("/fhir/r4/Observation", params=params, headers=bearer("20"))
    assert first.status_code == 200
    bundle = Bundle.model_validate(first.json())
    assert bundle.entry is not None
    assert len(bundle.entry) == 2
    links = {link.relation: link.url for link in bundle.link or []}
    assert set(links) == {"self", "next"}
    second = client.get(str(links["next"]), headers=bearer("20")).json()
    times = [e["resource"]["effectiveDateTime"] for e in first.json()["entry"] + second["entry"]]
    assert times == ["2026-11-01T11:00:00Z", "2026-11-01T10:00:00Z", "2026-11-01T09:00:00Z"]
    assert [link["relation"] for link in second["link"]] == ["self"]
    # Diastolic pressure is a component: the search finds whole blood-pressure panels.
    resource = FhirObservation.model_validate(second["entry"][0]["resource"])
    assert resource.component is not None
    diastolic = resource.component[1]
    assert [c.code for c in diastolic.code.coding or []] == ["150022", "8462-4"]
    assert diastolic.valueQuantity is not None
    assert diastolic.valueQuantity.value == Decimal(80)


def test_fhir_keeps_the_measured_precision(client: TestClient, fleet: Fleet,
                                           database_url: str) -> None:
    _store(database_url, fleet, 1)
    text = client.get("/fhir/r4/Observation", headers=bearer("20"), params={
        "subject": f"Patient/{fleet.patient}", "code": "http://loinc.org|8478-0"}).text
    assert '"value":93.3,' in text


def test_special_values_become_data_absent_reasons(client: TestClient, fleet: Fleet,
                                                   database_url: str) -> None:
    # Systolic NaN (0x07FF), diastolic NRes (0x0800), MAP +INF (0x07FE): PHD IG mapping.
    payload = bytes.fromhex("00ff070008fe07")
    with psycopg.connect(database_url) as conn:
        BatchStore(conn).write([Incoming(
            topic=f"aidlink/v1/{fleet.hub}/{fleet.cuff}/ble/2a35", payload=payload,
            received_at=datetime.now(UTC))])
    body = client.get("/fhir/r4/Observation", headers=bearer("20"),
                      params={"subject": f"Patient/{fleet.patient}"}).json()
    reasons = {}
    (entry,) = body["entry"]
    panel = FhirObservation.model_validate(entry["resource"])
    for component in panel.component or []:
        assert component.valueQuantity is None
        assert component.dataAbsentReason is not None
        loinc = next(c.code for c in component.code.coding or [] if c.system == "http://loinc.org")
        reasons[loinc] = next(c.code for c in component.dataAbsentReason.coding or [])
    assert reasons == {"8480-6": "not-a-number", "8462-4": "error", "8478-0": "positive-infinity"}


def test_fhir_errors_are_operation_outcomes(client: TestClient, fleet: Fleet) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"subject": "Patient/ok", "code": "http://snomed.info/sct|1"}, 400, "code system"),
        ({"subject": "Patient/ok", "date": "xx2026"}, 400, "date"),
        ({"subject": "Patient/bad ref!"}, 400, "patient"),
        ({"subject": "Patient/ok", "_count": 0}, 400, "_count"),
        ({"subject": "Patient/ok", "_cursor": "garbage"}, 400, "cursor"),
        ({}, 400, "subject"),
    ]
    for params, status, words in cases:
        response = client.get("/fhir/r4/Observation", params=params, headers=bearer("20"))
        assert response.status_code == status, params
        assert response.headers["content-type"].startswith("application/fhir+json")
        outcome = OperationOutcome.model_validate(response.json())
        assert words in (outcome.issue[0].diagnostics or ""), (params, response.json())


def test_missing_bad_or_expired_tokens_are_refused(client: TestClient, fleet: Fleet) -> None:
    url = "/v1/observations"
    params = {"patient": fleet.patient}
    key = genesis_key(SECRET)
    now = int(time.time())
    expired = jwt.encode({"iss": "aidlink", "sub": "x", "principal": "20", "role": "clinician",
                          "scope": "observations", "iat": now - 900, "exp": now - 120},
                         key.private_key, algorithm="ES256", headers={"kid": key.kid})
    # Another server's key under this server's kid: only the signature can tell.
    foreign = genesis_key(b"another-secret-another-secret-another")
    forged = issue_token(SigningKey(kid=key.kid, private_key=foreign.private_key),
                         principal="20", role=Role.CLINICIAN, subject="x", ttl_seconds=600)
    answers = {
        "none": client.get(url, params=params),
        "scheme": client.get(url, params=params, headers={"Authorization": "Basic abc"}),
        "expired": client.get(url, params=params,
                              headers={"Authorization": f"Bearer {expired}"}),
        "forged": client.get(url, params=params, headers={"Authorization": f"Bearer {forged}"}),
    }
    details = {name: (r.status_code, r.json()["detail"]) for name, r in answers.items()}
    assert details == {
        "none": (401, "missing Authorization header (Bearer token)"),
        "scheme": (401, "Authorization must be 'Bearer <token>'"),
        "expired": (401, "token has expired"),
        "forged": (401, "token is not valid: Signature verification failed"),
    }
    fhir = client.get("/fhir/r4/Observation", params={"subject": "Patient/x"})
    assert fhir.status_code == 401
    assert OperationOutcome.model_validate(fhir.json()).issue[0].code == "login"


def test_every_patient_read_is_in_the_access_log(client: TestClient, fleet: Fleet,
                                                 database_url: str) -> None:
    _store(database_url, fleet, 1)
    client.get("/v1/observations", params={"patient": fleet.patient},
               headers={**bearer("20"), "X-End-User": "nurse-anna", "X-Purpose": "care"})
    client.get("/v1/observations", params={"device": fleet.cuff}, headers=bearer("20"))
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT principal_code, client, role, end_user, action, purpose,"
                            " patient_key = (SELECT patient_key FROM assignments"
                            "  WHERE device_id = %s) FROM access_log ORDER BY id",
                            (fleet.cuff,)).fetchall()
    assert rows == [
        ("20", "test-clinician", "clinician", "nurse-anna", "observations.read", "care", True),
        ("20", "test-clinician", "clinician", None, "observations.read", "care", True),
    ]
    assert count(database_url, "SELECT count(*) FROM access_log WHERE patient_key = %s",
                 fleet.patient) == 0  # the reference itself is never stored


def test_metadata_and_device(client: TestClient, fleet: Fleet) -> None:
    meta = client.get("/fhir/r4/metadata")
    statement = CapabilityStatement.model_validate(meta.json())
    assert statement.fhirVersion == "4.0.1"
    own = client.get(f"/fhir/r4/Device/{fleet.cuff}", headers=bearer("20")).json()
    assert own == {"resourceType": "Device", "id": fleet.cuff, "status": "active",
                   "serialNumber": "C1", "modelNumber": "bpm",
                   "owner": {"identifier": {"system": "urn:aidlink:principal:scb-code",
                                            "value": "20"}, "display": "Region Dalarna"}}


def test_health_and_metrics(client: TestClient) -> None:
    health = client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok", "reasons": []})
    metrics = client.get("/metrics").text
    assert "aidlink_ingest_messages_total" in metrics
