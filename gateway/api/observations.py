"""Observation reads: ``/v1/observations`` (JSON) and ``/fhir/r4/Observation`` (FHIR R4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response

from adapters.catalogue import LOINC, MDC
from adapters.model import dumps
from gateway.api import fhir
from gateway.api.deps import Conn, PatientReader, State
from gateway.api.queries import (
    MAX_PAGE,
    CursorError,
    ObservationQuery,
    decode_cursor,
    fetch_observations,
    log_access,
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
    conn: Conn,
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
    }


_PREFIXES = ("ge", "gt", "le", "lt", "eq")


def _date_bounds(values: list[str]) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for raw in values:
        prefix, text = (raw[:2], raw[2:]) if raw[:2] in _PREFIXES else ("eq", raw)
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise HTTPException(400, f"date {raw!r} is not [ge|gt|le|lt]YYYY-MM-DD[Thh:mm:ssZ]"
                                ) from exc
        day_only = "T" not in text
        if moment.tzinfo is None and not day_only:
            raise HTTPException(400, f"date {raw!r} needs a zone offset")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # a bare date is a UTC day
        end = moment + timedelta(days=1) if day_only else moment
        if prefix in ("ge", "eq"):
            bounds.update(since=moment, since_inclusive=True)
        if prefix == "gt":
            bounds.update(since=end, since_inclusive=not day_only)
        if prefix == "lt":
            bounds.update(until=moment, until_inclusive=False)
        if prefix == "le":
            bounds.update(until=end, until_inclusive=not day_only)
        if prefix == "eq":
            bounds.update(until=end, until_inclusive=not day_only)
    return bounds


def _code_filter(code: str | None) -> dict[str, Any]:
    if code is None:
        return {}
    system, bar, value = code.rpartition("|")
    if not bar:
        system, value = "", code
    if system in ("", LOINC):
        return {"loinc": value}
    if system == MDC:
        if not value.isdigit():
            raise HTTPException(400, f"MDC code {value!r} must be a number")
        return {"mdc": int(value)}
    raise HTTPException(400, f"code system {system!r} is not supported; use {LOINC} or {MDC}")


@router.get("/fhir/r4/Observation")
def search_observations(
    request: Request,
    state: State,
    who: PatientReader,
    conn: Conn,
    subject: Annotated[str, Query(max_length=80, description="Patient/{ref}")],
    end_user: EndUser = None,
    purpose: Purpose = "care",
    code: Annotated[str | None, Query(max_length=80)] = None,
    date: Annotated[list[str] | None, Query(max_length=40)] = None,
    count: Annotated[int, Query(alias="_count", ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(alias="_cursor", max_length=200)] = None,
) -> Response:
    """A FHIR searchset of a patient's observations, newest first."""
    ref = subject.removeprefix("Patient/")
    key = _key(state, who.principal, ref)
    query = ObservationQuery(principal=who.principal, patient_key=key, limit=count,
                             after=_after(cursor), **_code_filter(code),
                             **_date_bounds(date or []))
    with conn.transaction():
        rows, next_cursor = fetch_observations(conn, query)
        log_access(conn, who, patient_keys={key}, action="fhir.Observation.search",
                   purpose=purpose, end_user=end_user,
                   detail={"route": "/fhir/r4/Observation", "rows": len(rows)})
    base = str(request.base_url).rstrip("/") + "/fhir/r4"
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "_cursor"]
    self_url = f"{base}/Observation?{urlencode(request.query_params.multi_items())}"
    next_url = None
    if next_cursor is not None:
        next_url = f"{base}/Observation?{urlencode([*params, ('_cursor', next_cursor)])}"
    bundle = fhir.searchset([fhir.observation(r, ref) for r in rows], self_url=self_url,
                            next_url=next_url, base=base)
    return Response(dumps(bundle), media_type=fhir.FHIR_JSON)
