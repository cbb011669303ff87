"""Observation reads in plain JSON: ``/v1/observations`` (the FHIR side is fhir_routes.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Response

from adapters.model import dumps
from gateway.api.deps import PatientReader, ScopedConn, State
from gateway.api.queries import (
    MAX_PAGE,
    CursorError,
    ObservationQuery,
    decode_cursor,
    fetch_observations,
    log_access,
    range_problem,
)
from provisioning.errors import InvalidInputError
from provisioning.patients import patient_key

router = APIRouter()

EndUser = Annotated[str | None, Header(alias="X-End-User", max_length=200)]
Purpose = Annotated[str, Header(alias="X-Purpose", max_length=100)]


def _key(state: State, principal: str, ref: str) -> str:
    try:
        return patient_key(state.secret, principal, ref)
    except InvalidInputError as exc:
        raise HTTPException(400, f"patient: {exc}") from exc


def _after(cursor: str | None) -> tuple[datetime, str, str] | None:
    if cursor is None:
        return None
    try:
        return decode_cursor(cursor)
    except CursorError as exc:
        raise HTTPException(400, str(exc)) from exc


@router.get("/v1/observations")
def list_observations(
    state: State,
    who: PatientReader,
    conn: ScopedConn,
    end_user: EndUser = None,
    purpose: Purpose = "care",
    patient: Annotated[str | None, Query(max_length=64)] = None,
    device: Annotated[str | None, Query(max_length=64)] = None,
    code: Annotated[str | None, Query(max_length=32, description="LOINC code")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """A principal's observations for a patient or a device, newest first, paged."""
    if patient is None and device is None:
        raise HTTPException(400, "give patient or device")
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise HTTPException(400, f"{name} must carry a zone offset (RFC 3339)")
    problem = range_problem(since, until, datetime.now(UTC), lower=f"since={since}",
                            upper=f"until={until}")
    if problem is not None:
        raise HTTPException(400, problem)
    key = None if patient is None else _key(state, who.principal, patient)
    query = ObservationQuery(principal=who.principal, patient_key=key, device_id=device,
                             loinc=code, since=since, until=until, limit=limit,
                             after=_after(cursor))
    with conn.transaction():
        rows, next_cursor = fetch_observations(conn, query)
        log_access(conn, who, patient_keys={r["patient_key"] for r in rows if r["patient_key"]}
                   | ({key} if key else set()), action="observations.read", purpose=purpose,
                   end_user=end_user, detail={"route": "/v1/observations", "rows": len(rows)})
    items = [_item(row, patient) for row in rows]
    body = dumps({"items": items, "next_cursor": next_cursor})
    return Response(body, media_type="application/json")


def _item(row: dict[str, Any], patient: str | None) -> dict[str, Any]:
    return {
        "kind": "observation",
        "code": row["code"],
        "mdc": row["mdc"],
        "value": row["value"],
        "unit": row["unit"],
        "measured_at": row["measured_at"],
        "flags": row["flags"],
        "absent_reason": row["absent_reason"],
        "panel": row["panel"],
        "device_user": row["device_user"],
        "sequence": row["sequence"],
        "device_id": row["device_id"],
        # The caller's own reference when it asked by patient; otherwise the pseudonym.
        "patient": patient if patient is not None else row["patient_key"],
        "received_at": row["received_at"],
        # Coded and sampled results (migration 0016) appear only when set, as in the model.
        **({} if row.get("value_code") is None else {"value_code": row["value_code"]}),
        **({} if row.get("sampled") is None else {"sampled": row["sampled"]}),
    }
