"""The FHIR R4 read side under ``/fhir/r4``: Observation search, Device and Patient reads and
the CapabilityStatement (DESIGN.md, HTTP API). Every answer is ``application/fhir+json``; errors
become OperationOutcomes in app.py's handlers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Header, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from adapters.model import dumps
from gateway import profiles
from gateway.api import fhir
from gateway.api.deps import ApiState, DevicesReader, PatientReader, ScopedConn, State, scoped
from gateway.api.fhir_capability import capability
from gateway.api.fhir_identity import PRINCIPAL_SYSTEM, patient_identifier
from gateway.api.fhir_params import SearchError, parse
from gateway.api.queries import log_access
from gateway.api.readings import ReadingQuery, encode_reading_cursor, fetch_readings
from gateway.auth import Caller
from provisioning.errors import InvalidInputError
from provisioning.patients import patient_key

router = APIRouter(prefix="/fhir/r4")
# The OAuth2 client-credentials endpoint; the statement claims OAuth only when it is served.
OAUTH_ENDPOINT = "/oauth/token"

EndUser = Annotated[str | None, Header(alias="X-End-User", max_length=200)]
Purpose = Annotated[str, Header(alias="X-Purpose", max_length=100)]


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir/r4"


def _fhir(resource: dict[str, Any]) -> Response:
    return Response(dumps(resource), media_type=fhir.FHIR_JSON)


def _key(state: State, principal: str, ref: str, name: str) -> str:
    try:
        return patient_key(state.secret, principal, ref)
    except InvalidInputError as exc:
        raise HTTPException(400, f"{name}: {exc}") from exc


@router.get("/metadata")
def metadata(request: Request) -> Response:
    """The CapabilityStatement: what this server really supports."""
    # The app's own route table, as its OpenAPI document lists it (built once, then cached).
    served = OAUTH_ENDPOINT in request.app.openapi().get("paths", {})
    token_url = str(request.base_url).rstrip("/") + OAUTH_ENDPOINT if served else None
    return _fhir(capability(_base(request), token_url=token_url))


@router.get("/Observation")
async def search_observations(request: Request, state: State, who: PatientReader,
                              end_user: EndUser = None, purpose: Purpose = "care") -> Response:
    """A searchset of the principal's readings for a patient or a device, one page."""
    # All of it on one worker thread: each hop between the event loop and a thread costs
    # about as much as a round trip to the database, and a page makes only two of those.
    body = await run_in_threadpool(_search_page, state, who, request.query_params.multi_items(),
                                   _base(request), end_user, purpose)
    return Response(body, media_type=fhir.FHIR_JSON)


def _search_page(state: ApiState, who: Caller, items: list[tuple[str, str]], base: str,
                 end_user: str | None, purpose: str) -> bytes:
    """The searchset's JSON, its reads and their access-log entries committed."""
    try:
        search = parse(items, datetime.now(UTC))
    except SearchError as exc:
        raise HTTPException(400, str(exc)) from exc
    key = None
    if search.patient_ref is not None:
        key = _key(state, who.principal, search.patient_ref, "subject")
    query = ReadingQuery(
        principal=who.principal, patient_key=key, device_id=search.device_id,
        loinc=search.loinc, mdc=search.mdc, panels=search.panels, since=search.since,
        until=search.until, since_inclusive=search.since_inclusive,
        until_inclusive=search.until_inclusive, newest_first=search.newest_first,
        limit=search.count, after=search.after)
    with scoped(state, who.principal, pipelined=True) as conn:
        readings, last = fetch_readings(conn, query)
        seen = {key for r in readings if (key := r.patient_key)}
        log_access(conn, who, patient_keys=seen | ({key} if key else set()),
                   action="fhir.Observation.search", purpose=purpose, end_user=end_user,
                   detail={"route": "/fhir/r4/Observation", "readings": len(readings),
                           "device": search.device_id})
    self_url = f"{base}/Observation?{urlencode(items)}"
    next_url = None
    if last is not None:
        cursor = encode_reading_cursor(last, newest_first=search.newest_first)
        kept = [(k, v) for k, v in items if k != "_cursor"]
        next_url = f"{base}/Observation?{urlencode([*kept, ('_cursor', cursor)])}"
    bundle = fhir.searchset(fhir.observations(readings, search.patient_ref), self_url=self_url,
                            next_url=next_url, base=base)
    return fhir.to_json(bundle)


@router.get("/Device/{device_id}")
def device(device_id: str, who: DevicesReader, conn: ScopedConn) -> Response:
    """One device of the caller's principal: model, serial, firmware, maker and owner."""
    row = conn.execute(
        "SELECT d.id, d.model, d.serial, d.firmware_version, d.state, p.name"
        " FROM devices d JOIN principals p ON p.code = d.principal_code"
        " WHERE d.id = %s AND d.principal_code = %s",
        (device_id, who.principal),
    ).fetchone()
    if row is None:
        raise HTTPException(404, f"Device/{device_id} not found for principal {who.principal}")
    ident, model, serial, firmware, state, owner_name = row
    # The maker as the model's firmware profile names it (firmware_profiles/*.toml).
    profile = profiles.by_model().get(model)
    manufacturer = profile.manufacturer if profile is not None else None
    resource: dict[str, Any] = {
        "resourceType": "Device", "id": ident,
        # Retired devices are out of use for good; every other state is a device in the fleet.
        "status": "inactive" if state == "retired" else "active",
    }
    if manufacturer is not None:
        resource["manufacturer"] = manufacturer
    resource.update(serialNumber=serial, modelNumber=model)
    if firmware is not None:
        resource["version"] = [{"type": {"text": "firmware"}, "value": firmware}]
    resource["owner"] = {"identifier": {"system": PRINCIPAL_SYSTEM, "value": who.principal},
                         "display": owner_name}
    return _fhir(resource)


@router.get("/Patient/{ref}")
def patient(ref: str, state: State, who: PatientReader, conn: ScopedConn,
            end_user: EndUser = None, purpose: Purpose = "care") -> Response:
    """A patient the principal has had a device assigned to, by the caller's own reference;
    only its identifier, as aidlink keeps nothing else (and that only as a keyed hash)."""
    key = _key(state, who.principal, ref, "Patient id")
    with conn.transaction():
        known = conn.execute(
            "SELECT 1 FROM assignments WHERE principal_code = %s AND patient_key = %s LIMIT 1",
            (who.principal, key),
        ).fetchone()
        if known is None:
            raise HTTPException(404, f"Patient/{ref} not found: principal {who.principal} has"
                                     " never had a device assigned to that patient")
        log_access(conn, who, patient_keys={key}, action="fhir.Patient.read", purpose=purpose,
                   end_user=end_user, detail={"route": "/fhir/r4/Patient"})
    return _fhir({"resourceType": "Patient", "id": ref,
                  "identifier": [patient_identifier(ref, who.principal)]})
