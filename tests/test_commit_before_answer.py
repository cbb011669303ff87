"""A request's work is committed before its answer goes out.

The routes' connections commit when the route has returned. Were that after the response (as
FastAPI runs a dependency's exit by default), a client could be shown patient data whose
access-log entry then failed to commit. A deferred constraint trigger makes the commit itself
fail, after every statement succeeded.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.support import Fleet, api_client, bearer, count, seed
from tests.test_row_security import store_readings

READER = {**bearer("20"), "X-End-User": "nurse-anna", "X-Purpose": "care"}


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    fleet = seed(database_url)
    store_readings(database_url, fleet)
    return fleet


@pytest.fixture
def client(database_url: str, fleet: Fleet) -> Iterator[TestClient]:
    with api_client(database_url) as api:
        yield api


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
                      headers=READER)
    assert fhir.status_code == 200 and fhir.json()["entry"], fhir.text
    logged = count(database_url, "SELECT count(*) FROM access_log")
    _refuse_commits_of(database_url, "access_log")
    fhir = client.get("/fhir/r4/Observation", params={"subject": f"Patient/{fleet.patient}"},
                      headers=READER)
    assert fhir.status_code == 503, fhir.text
    assert fhir.headers["content-type"].startswith("application/fhir+json")
    outcome = fhir.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "did not commit" in outcome["issue"][0]["diagnostics"]
    patient = client.get(f"/fhir/r4/Patient/{fleet.patient}", headers=READER)
    assert patient.status_code == 503, patient.text
    assert patient.json()["resourceType"] == "OperationOutcome"
    plain = client.get("/v1/observations", params={"patient": fleet.patient}, headers=READER)
    assert plain.status_code == 503, plain.text
    assert set(plain.json()) == {"detail"}
    assert count(database_url, "SELECT count(*) FROM access_log") == logged
