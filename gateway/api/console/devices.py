"""The device page (recent readings plotted, lifecycle history, licences, the state of a
reconditioning device's wipe command) and its actions: assign, return, recondition, revoke.

Each action runs through the API route function of the same name, so the console changes a
device exactly as ``POST /v1/devices/{id}/...`` does (service layer, transaction, credential
revocation, broker refresh). The console confines every device to the token's principal,
an admin's too: another principal's device is "not found".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse
from psycopg.rows import dict_row
from pydantic import BaseModel, ValidationError

from adapters.catalogue import BY_MDC
from gateway.api import deps, provisioning
from gateway.api.broker_sync import BrokerDir
from gateway.api.console import i18n, plot
from gateway.api.console.render import ConsoleRoute, language, local_time, page, redirect
from gateway.api.console.session import PATH, CsrfCaller, DevicesReader, ScopedConn
from gateway.api.deps import Conn, State
from gateway.api.provisioning_common import MaybePassphrase, Passphrase, operator
from gateway.api.provisioning_models import AssignBody, ReasonBody, ReturnBody, RevokeBody
from gateway.api.queries import log_access
from gateway.api.readings import ROW_COLUMNS, ReadingQuery, fetch_readings
from gateway.auth import Caller
from provisioning import licences, lifecycle, service
from provisioning.errors import NotFoundError
from provisioning.service import Conn as Connection

router = APIRouter(route_class=ConsoleRoute)

READING_DAYS = 30
READING_LIMIT = 200
DONE = ("assign", "return", "revoke")
Text = Annotated[str, Form(max_length=500)]


def own_device(conn: Connection, who: Caller, device_id: str) -> dict[str, Any]:
    """A device of the caller's principal; any other is as unknown as a missing one."""
    try:
        return service.get_device(conn, device_id, who.principal)
    except NotFoundError:
        raise HTTPException(404, f"device {device_id} not found") from None


def _metric_name(row: dict[str, Any], lang: str) -> str:
    metric = BY_MDC.get(row["mdc"]) if row["mdc"] is not None else None
    if metric is None:
        return str(row["code"])
    if lang == "sv":
        return i18n.METRIC_NAMES_SV.get(metric.key, metric.display)
    return metric.display


def _readings(scoped: Connection, who: Caller, device_id: str,
              lang: str) -> tuple[list[dict[str, Any]], list[plot.Series]]:
    """The device's readings of the last days as table rows and chart series; the read is
    written to the access log in the same transaction, as the API's reads are."""
    since = datetime.now(UTC) - timedelta(days=READING_DAYS)
    found, _ = fetch_readings(scoped, ReadingQuery(
        principal=who.principal, device_id=device_id, since=since, limit=READING_LIMIT))
    rows: list[dict[str, Any]] = [dict(zip(ROW_COLUMNS, row, strict=True))
                                  for reading in found for row in reading.rows]
    log_access(scoped, who, patient_keys={r["patient_key"] for r in rows if r["patient_key"]},
               action="observations.read", purpose="care", end_user=None,
               detail={"route": f"/console/devices/{device_id}", "rows": len(rows)})
    table = [{"ts": row["ts"], "name": _metric_name(row, lang), "unit": row["unit"],
              "value": row["value"], "absent": row["absent_reason"]} for row in rows]
    by_name: dict[tuple[str, str], list[tuple[datetime, float]]] = {}
    for row in reversed(rows):  # oldest first, as a line is drawn
        if row["value"] is not None:
            key = (_metric_name(row, lang), str(row["unit"]))
            by_name.setdefault(key, []).append((row["ts"], float(row["value"])))
    series = [plot.Series(label=name, unit=unit, points=tuple(points))
              for (name, unit), points in by_name.items()]
    return table, series


def _may(check: Callable[[Caller], Any], who: Caller) -> str | None:
    """None when the API's rule ``check`` lets the caller through, else its reason."""
    try:
        check(who)
    except HTTPException as exc:
        return str(exc.detail)
    return None


def wipe_state(conn: Connection, device_id: str) -> dict[str, Any] | None:
    """Where the latest wipe request of a device stands: ``requested`` (pending in
    wipe_requests, not yet accepted by the broker), ``published`` (held retained by the
    broker, not yet confirmed) or ``confirmed``, with the request's times; None without one.
    The nonce is left out: the page shows it only once, when reconditioning starts."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT requested_at, published_at, confirmed_at, cleared_at FROM wipe_requests"
            " WHERE device_id = %s ORDER BY id DESC LIMIT 1", (device_id,))
        row = cur.fetchone()
    if row is None:
        return None
    state = ("confirmed" if row["confirmed_at"] is not None
             else "published" if row["published_at"] is not None else "requested")
    return {"state": state, **row}


def device_page(request: Request, who: Caller, scoped: Connection, conn: Connection,
                device_id: str, *, status: int = 200, **extra: Any) -> HTMLResponse:
    """The device page, with ``extra`` (a message, form errors) from an action."""
    device = own_device(scoped, who, device_id)
    lang = language(request)
    denied = _may(deps.patient_reader, who)
    table: list[dict[str, Any]] = []
    series: list[plot.Series] = []
    if denied is None:
        table, series = _readings(scoped, who, device_id, lang)
    with conn.transaction():
        history = lifecycle.history_by_owner(conn, device_id).get(who.principal, [])
        held = licences.list_licences(conn, device_id=device_id, principal=who.principal)
        # Only while reconditioning: a wipe of an earlier reconditioning is over and done.
        wipe = wipe_state(conn, device_id) if device["state"] == "reconditioning" else None
    chart = plot.svg(series, title_id="plot-title", desc_id="plot-desc",
                     time_label=local_time)
    return page(request, "device.html", who=who, status=status, device=device,
                here=f"/console/devices/{device_id}",
                readings=table, series=plot.legend(series), chart=chart, denied=denied,
                history=history, licences=held, wipe=wipe,
                operator=_may(operator, who) is None, **extra)


@router.get("/devices/{device_id}", response_class=HTMLResponse)
def show(request: Request, device_id: str, who: DevicesReader, scoped: ScopedConn,
         conn: Conn, done: Annotated[str | None, Query(max_length=20)] = None) -> HTMLResponse:
    """One device of the caller's principal; ``done`` names the action just completed."""
    t = i18n.Translator(language(request))
    message = t(f"done.{done}") if done in DONE else ""
    return device_page(request, who, scoped, conn, device_id, message=message)


def _body(request: Request, model: type[BaseModel], prefix: str, values: dict[str, str]
          ) -> tuple[BaseModel | None, dict[str, str]]:
    """The API's request body from form fields, or the fields' problems by form field name
    (an empty field is a missing one, as a form cannot leave a field out)."""
    t = i18n.Translator(language(request))
    given = {key: value.strip() for key, value in values.items() if value.strip()}
    try:
        return model(**given), {}
    except ValidationError as exc:
        return None, {f"{prefix}-{err['loc'][0]}": t("required") if err["type"] == "missing"
                      else err["msg"] for err in exc.errors() if err["loc"]}


def _act(request: Request, who: Caller, scoped: Connection, conn: Connection,
         device_id: str, action: str, body: BaseModel | None, errors: dict[str, str],
         run: Callable[[Any], Any], values: dict[str, str]) -> Response:
    """Run an action through its API route function; the device page with the outcome."""
    own_device(scoped, who, device_id)
    form = {f"{action}-{key}": value for key, value in values.items()}
    if body is None:
        return device_page(request, who, scoped, conn, device_id, status=422, errors=errors,
                           values=form)
    try:
        outcome = run(body)
    except HTTPException as exc:
        if exc.status_code in (401, 403, 404, 503):
            raise
        # A refused transition (409) or value (422): said on the page, beside the form.
        return device_page(request, who, scoped, conn, device_id, status=exc.status_code,
                           problem=str(exc.detail), values=form)
    if isinstance(outcome, Response):
        outcome = json.loads(bytes(outcome.body))
    elif isinstance(outcome, BaseModel):
        outcome = outcome.model_dump()
    if action != "recondition":
        # Post/redirect/get: reloading the page that follows does not repeat the action.
        return redirect(f"{PATH}/devices/{device_id}?{urlencode({'done': action})}")
    # The command is shown this once, as the API answers it once: its nonce is what a
    # confirmation by hand needs. It stays pending in wipe_requests until the downlink round
    # publishes it; later pages show only the request's state (wipe_state).
    t = i18n.Translator(language(request))
    return device_page(request, who, scoped, conn, device_id, message=t(
        "done.recondition", topic=outcome["topic"], payload=outcome["payload"]))


@router.post("/devices/{device_id}/assign", response_class=HTMLResponse)
def assign(request: Request, device_id: str, who: CsrfCaller, scoped: ScopedConn, conn: Conn,
           state: State, patient: Text = "", basis: Text = "",
           prescribing_unit: Text = "", until: Text = "") -> Response:
    """Assign the device to a patient (``POST /v1/devices/{id}/assign``)."""
    op = operator(who)
    values = {"patient": patient, "basis": basis, "prescribing_unit": prescribing_unit,
              "until": until}
    body, errors = _body(request, AssignBody, "assign", values)
    return _act(request, who, scoped, conn, device_id, "assign", body, errors,
                lambda b: provisioning.assign(device_id, b, op, conn, state), values)


@router.post("/devices/{device_id}/return", response_class=HTMLResponse)
def take_back(request: Request, device_id: str, who: CsrfCaller, scoped: ScopedConn,
              conn: Conn, reason: Text = "", fault: Text = "") -> Response:
    """Take the device back from its patient (``POST /v1/devices/{id}/return``)."""
    op = operator(who)
    values = {"reason": reason, "fault": fault}
    body, errors = _body(request, ReturnBody, "return", values)
    return _act(request, who, scoped, conn, device_id, "return", body, errors,
                lambda b: provisioning.return_device(device_id, b, op, conn), values)


@router.post("/devices/{device_id}/recondition", response_class=HTMLResponse)
def recondition(request: Request, device_id: str, who: CsrfCaller, scoped: ScopedConn,
                conn: Conn, ca: MaybePassphrase, broker: BrokerDir,
                reason: Text = "") -> Response:
    """Start reconditioning (``POST /v1/devices/{id}/recondition``). No CA is needed, as the
    API's route needs none: the credentials are revoked only when the wipe is confirmed."""
    op = operator(who)
    values = {"reason": reason}
    body, errors = _body(request, ReasonBody, "recondition", values)
    return _act(request, who, scoped, conn, device_id, "recondition", body, errors,
                lambda b: provisioning.recondition(device_id, b, op, conn, ca, broker),
                values)


@router.post("/devices/{device_id}/revoke", response_class=HTMLResponse)
def revoke(request: Request, device_id: str, who: CsrfCaller, scoped: ScopedConn, conn: Conn,
           ca: Passphrase, broker: BrokerDir, reason: Text = "") -> Response:
    """Revoke the device's credentials (``POST /v1/devices/{id}/revoke``)."""
    op = operator(who)
    values = {"reason": reason}
    body, errors = _body(request, RevokeBody, "revoke", values)
    return _act(request, who, scoped, conn, device_id, "revoke", body, errors,
                lambda b: provisioning.revoke(device_id, b, op, conn, ca, broker), values)
