"""Helpers of the FHIR tests: readings stored as the gateway stores them, searches whose
answers are checked as FHIR R4 (fhir.resources R4B models: R4's shape for these resources)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome

from gateway.db import month_start
from gateway.ingest.store import BatchStore, Incoming
from simulators.bpm import BpReading, encode
from tests.support import Fleet, bearer

MDC = "urn:iso:std:iso:11073:10101"
LOINC = "http://loinc.org"
START = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
URL = "/fhir/r4/Observation"


def store(url: str, fleet: Fleet, readings: list[BpReading]) -> None:
    """Store cuff readings through the real batch writer, as the gateway does."""
    batch = [Incoming(topic=f"aidlink/v1/{fleet.hub}/{fleet.cuff}/ble/2a35",
                      payload=encode(r),
                      received_at=(r.measured_at or START) + timedelta(seconds=2))
             for r in readings]
    with psycopg.connect(url) as conn:
        assert BatchStore(conn).write(batch).stored_messages == len(readings)


def partition(conn: psycopg.Connection[Any], at: datetime) -> None:
    """The month's partition, which rows written past the batch writer need (without
    TimescaleDB the table is natively partitioned by month)."""
    if conn.execute("SELECT to_regproc('aidlink_ensure_observation_partition')").fetchone() \
            != (None,):
        conn.execute("SELECT aidlink_ensure_observation_partition(%s)",
                     (month_start(at),))


def hourly(url: str, fleet: Fleet, hours: int) -> None:
    store(url, fleet, [BpReading(systolic=Decimal(120 + h), diastolic=Decimal(80),
                                  mean=Decimal("93.3"), pulse=Decimal(60),
                                  measured_at=START + timedelta(hours=h))
                        for h in range(hours)])


def search(client: TestClient, fleet: Fleet, **params: Any) -> dict[str, Any]:
    params.setdefault("subject", f"Patient/{fleet.patient}")
    response = client.get(URL, params=params, headers=bearer("20"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    Bundle.model_validate(body)
    return body


def resources(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in body.get("entry", [])]


def loinc(resource: dict[str, Any]) -> str:
    return str(next(c["code"] for c in resource["code"]["coding"] if c["system"] == LOINC))


def by_loinc(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {loinc(r): r for r in resources(body)}


def error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = OperationOutcome.model_validate(response.json())
    return outcome.issue[0].diagnostics or ""
