"""The access log of patient-data reads and its auditors' route ``GET /v1/access-log``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from gateway.auth import Role
from provisioning.patients import patient_key
from tests.support import SECRET, Fleet, api_client, bearer, count, seed
from tests.test_row_security import store_readings

READER = {"X-End-User": "nurse-anna", "X-Purpose": "care"}
_READER = {**bearer("20"), **READER}


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    fleet = seed(database_url)
    store_readings(database_url, fleet)
    return fleet


@pytest.fixture
def client(database_url: str, fleet: Fleet) -> Iterator[TestClient]:
    with api_client(database_url) as api:
        yield api


def _reads(client: TestClient, fleet: Fleet) -> None:
    """A clinician of principal 20 reads its patient in plain JSON, then in FHIR."""
    plain = client.get("/v1/observations", params={"patient": fleet.patient},
                       headers={**bearer("20"), **READER})
    assert plain.status_code == 200, plain.text
    assert plain.json()["items"], "the read found no observations to log"
    fhir = client.get("/fhir/r4/Observation", params={"subject": f"Patient/{fleet.patient}"},
                      headers={**bearer("20"), "X-End-User": "dr-berg",
                               "X-Purpose": "follow-up"})
    assert fhir.status_code == 200, fhir.text


def _log(api: TestClient, principal: str, role: Role = Role.AUDITOR,
         **params: Any) -> Any:
    response = api.get("/v1/access-log", params=params, headers=bearer(principal, role))
    assert response.status_code == 200, response.text
    return response.json()


def test_each_read_is_logged_with_who_why_and_which_patient(client: TestClient, fleet: Fleet,
                                                            database_url: str) -> None:
    _reads(client, fleet)
    body = _log(client, "20", patient=fleet.patient)
    assert body["next_cursor"] is None
    entries = [{k: e[k] for k in ("client", "role", "end_user", "action", "purpose", "patient")}
               for e in body["items"]]
    # Newest first: the FHIR search came second.
    assert entries == [
        {"client": "test-clinician", "role": "clinician", "end_user": "dr-berg",
         "action": "fhir.Observation.search", "purpose": "follow-up",
         "patient": fleet.patient},
        {"client": "test-clinician", "role": "clinician", "end_user": "nurse-anna",
         "action": "observations.read", "purpose": "care", "patient": fleet.patient},
    ]
    # The detail is each route's own (for example its path and row count), always an object.
    assert all(e["at"].endswith("Z") and isinstance(e["detail"], dict) for e in body["items"])
    # Stored under the pseudonym only: the reference itself never reaches the database.
    key = patient_key(SECRET, "20", fleet.patient)
    assert count(database_url, "SELECT count(*) FROM access_log WHERE patient_key = %s",
                 key) == 2
    assert count(database_url, "SELECT count(*) FROM access_log WHERE patient_key = %s"
                 " OR detail::text LIKE %s", fleet.patient, f"%{fleet.patient}%") == 0


def test_pages_newest_first_and_filters_by_client_and_time(client: TestClient, fleet: Fleet,
                                                           database_url: str) -> None:
    _reads(client, fleet)
    _reads(client, fleet)
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"patient": fleet.patient, "limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        body = _log(client, "20", **params)
        seen.extend(body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 2
    assert [e["end_user"] for e in seen] == ["dr-berg", "nurse-anna"] * 2
    assert [e["at"] for e in seen] == sorted((e["at"] for e in seen), reverse=True)
    by_client = _log(client, "20", client="test-clinician")["items"]
    key = patient_key(SECRET, "20", fleet.patient)
    # Without a patient filter the pseudonym stands in, as on /v1/observations.
    assert [e["patient"] for e in by_client] == [key] * 4
    assert _log(client, "20", client="another-system")["items"] == []
    newest = seen[0]["at"]
    assert _log(client, "20", patient=fleet.patient, since=newest)["items"] == seen[:1]
    assert len(_log(client, "20", patient=fleet.patient, until=newest)["items"]) == 3


def test_another_principals_auditor_sees_none_of_it(client: TestClient, fleet: Fleet) -> None:
    _reads(client, fleet)
    assert _log(client, "2080", patient=fleet.patient)["items"] == []
    assert _log(client, "2080", client="test-clinician")["items"] == []
    # An admin audits its own principal only, like the auditor.
    assert _log(client, "2080", Role.ADMIN, patient=fleet.patient)["items"] == []
    assert len(_log(client, "20", Role.ADMIN, patient=fleet.patient)["items"]) == 2


@pytest.mark.parametrize("role", [Role.CLINICIAN, Role.TECHNICIAN])
def test_only_auditors_and_admins_read_the_access_log(client: TestClient, fleet: Fleet,
                                                      role: Role) -> None:
    _reads(client, fleet)
    response = client.get("/v1/access-log", params={"patient": fleet.patient},
                          headers=bearer("20", role))
    assert response.status_code == 403
    assert response.json() == {"detail": f"role {role} may not read the access log"}


def test_reading_the_log_is_not_logged_and_bad_requests_are_named(
        client: TestClient, fleet: Fleet, database_url: str) -> None:
    _reads(client, fleet)
    before = count(database_url, "SELECT count(*) FROM access_log")
    _log(client, "20", patient=fleet.patient)
    assert count(database_url, "SELECT count(*) FROM access_log") == before
    problems = {
        (): "give patient or client",
        (("patient", "not a ref!"),): "patient: patient reference must be",
        (("client", "x"), ("since", "2026-11-01T08:00:00")): "since must carry a zone offset",
        (("client", "x"), ("cursor", "bm9wZQ")): "cursor is not valid",
    }
    for params, reason in problems.items():
        response = client.get("/v1/access-log", params=dict(params),
                              headers=bearer("20", Role.AUDITOR))
        assert response.status_code == 400, (params, response.text)
        assert reason in response.json()["detail"]


def test_retention_of_readings_leaves_the_access_log(client: TestClient, fleet: Fleet,
                                                     database_url: str) -> None:
    _reads(client, fleet)
    with psycopg.connect(database_url) as conn:
        # What a retention job does to measurements: they go, the record of their reads stays.
        conn.execute("DELETE FROM observations")
        conn.execute("DELETE FROM events")
    assert len(_log(client, "20", patient=fleet.patient)["items"]) == 2


# A request's work is committed before its answer goes out. Were the commit after the
# response (as FastAPI runs a dependency's exit by default), a client could be shown patient
# data whose access-log entry then failed to commit. A deferred constraint trigger makes the
# commit itself fail, after every statement succeeded.
def _refuse_commits_of(database_url: str, table: str) -> None:
    """Every transaction that inserts into ``table`` fails at COMMIT, and only there."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS"
                     " $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$")
        conn.execute(f"CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON {table}"
                     " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
                     " EXECUTE FUNCTION refuse_at_commit()")


def test_reads_whose_access_log_entry_fails_to_commit_show_no_data(
        client: TestClient, fleet: Fleet, database_url: str) -> None:
    # The reads work, and find data to show, while the log can be committed.
    fhir = client.get("/fhir/r4/Observation", params={"subject": f"Patient/{fleet.patient}"},
                      headers=_READER)
    assert fhir.status_code == 200 and fhir.json()["entry"], fhir.text
    logged = count(database_url, "SELECT count(*) FROM access_log")
    _refuse_commits_of(database_url, "access_log")
    fhir = client.get("/fhir/r4/Observation", params={"subject": f"Patient/{fleet.patient}"},
                      headers=_READER)
    assert fhir.status_code == 503, fhir.text
    assert fhir.headers["content-type"].startswith("application/fhir+json")
    outcome = fhir.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "did not commit" in outcome["issue"][0]["diagnostics"]
    patient = client.get(f"/fhir/r4/Patient/{fleet.patient}", headers=_READER)
    assert patient.status_code == 503, patient.text
    assert patient.json()["resourceType"] == "OperationOutcome"
    plain = client.get("/v1/observations", params={"patient": fleet.patient}, headers=_READER)
    assert plain.status_code == 503, plain.text
    assert set(plain.json()) == {"detail"}
    assert count(database_url, "SELECT count(*) FROM access_log") == logged
