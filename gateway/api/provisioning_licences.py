"""Principals, the product and licence catalogue, licences, bulk onboarding and the Sesam
traceability CSV, included under ``/v1`` by ``gateway.api.provisioning``.

The catalogue (vendors, products, licence terms) and principals are shared, so only an admin
writes them; a technician works within its token's principal, as on the device routes.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.broker_sync import BrokerDir, sync
from gateway.api.deps import Conn
from gateway.api.provisioning_common import (
    AdminDep,
    Operator,
    OperatorDep,
    Passphrase,
    PrincipalQuery,
    json_response,
    mapped_errors,
    scoped_device,
)
from gateway.settings import ConfigurationError, device_broker_url, load_settings
from provisioning import bulk, licences, participation, reports, service

router = APIRouter()

CSV_LIMIT = 5 * 1024 * 1024  # bytes of a CSV upload


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrincipalCreate(_In):
    """A principal (region or municipality) and how its devices authenticate."""

    code: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=200)
    device_auth: str = Field(default="mtls", min_length=1, max_length=16)
    participating: bool = True
    participates_from: date | None = None


class VendorCreate(_In):
    """A vendor of products and licences."""

    code: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=200)


class ProductCreate(_In):
    """A product under its Sesam article number."""

    article_number: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=200)
    product_class: str = Field(min_length=1, max_length=40)
    vendor: str = Field(min_length=1, max_length=32)


class TermsCreate(_In):
    """Licence terms of a product; ``device_price`` only when the device is extra."""

    code: str = Field(min_length=1, max_length=32)
    article_number: str = Field(min_length=1, max_length=32)
    period: str = Field(min_length=1, max_length=16)
    price: Decimal
    device_included: bool
    acquisition: str = Field(min_length=1, max_length=16)
    device_price: Decimal | None = None


class LicenceCreate(_In):
    """A licence for a device; the payer defaults to the device's principal."""

    device_id: str = Field(min_length=1, max_length=64)
    terms: str = Field(min_length=1, max_length=32)
    start_date: date
    end_date: date | None = None
    principal: str | None = Field(default=None, min_length=1, max_length=32)
    unit: str | None = Field(default=None, min_length=1, max_length=64)


class LicenceEnd(_In):
    """The last day of a licence, and why."""

    end_date: date
    reason: str = Field(min_length=1, max_length=500)


async def csv_body(request: Request) -> str:
    """The request body as CSV text: ``text/csv``, at most CSV_LIMIT bytes, UTF-8."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "text/csv":
        raise HTTPException(415, f"the body must be text/csv, not {kind or 'untyped'}")
    too_large = HTTPException(413, f"the CSV body exceeds the limit of {CSV_LIMIT} bytes"
                                   f" ({CSV_LIMIT // (1024 * 1024)} MB)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > CSV_LIMIT:
        raise too_large
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > CSV_LIMIT:
            raise too_large
    try:
        return bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HTTPException(422, f"the CSV body is not UTF-8: byte {exc.start}") from exc


CsvBody = Annotated[str, Depends(csv_body)]


# --- principals ---------------------------------------------------------------------------


@router.post("/principals", status_code=201)
def create_principal(body: PrincipalCreate, op: AdminDep, conn: Conn) -> Response:
    """Register a principal (admins only); it participates from now unless told otherwise."""
    begins = body.participates_from
    with mapped_errors(), conn.transaction():
        row = service.add_principal(
            conn, body.code, body.name, body.device_auth, participating=body.participating,
            participates_from=None if begins is None else participation.start_of(begins),
            actor=op.actor)
    return json_response(row, 201)


@router.get("/principals")
def get_principals(op: OperatorDep, conn: Conn) -> Response:
    """Every principal for an admin; a technician's own only."""
    with mapped_errors(), conn.transaction():
        rows = (service.list_principals(conn) if op.scope is None
                else [service.get_principal(conn, op.scope)])
    return json_response({"items": rows})


# --- the catalogue ------------------------------------------------------------------------


@router.post("/vendors", status_code=201)
def create_vendor(body: VendorCreate, _op: AdminDep, conn: Conn) -> Response:
    """Register a vendor (admins only: the catalogue is shared)."""
    with mapped_errors(), conn.transaction():
        row = licences.add_vendor(conn, code=body.code, name=body.name)
    return json_response(row, 201)


@router.post("/products", status_code=201)
def create_product(body: ProductCreate, _op: AdminDep, conn: Conn) -> Response:
    """Register a product under its Sesam article number (admins only)."""
    with mapped_errors(), conn.transaction():
        row = licences.add_product(conn, article_number=body.article_number, name=body.name,
                                   product_class=body.product_class, vendor=body.vendor)
    return json_response(row, 201)


@router.post("/licence-terms", status_code=201)
def create_terms(body: TermsCreate, _op: AdminDep, conn: Conn) -> Response:
    """Register licence terms for a product (admins only)."""
    with mapped_errors(), conn.transaction():
        row = licences.add_terms(
            conn, code=body.code, article_number=body.article_number, period=body.period,
            price=body.price, device_included=body.device_included,
            acquisition=body.acquisition, device_price=body.device_price)
    return json_response(row, 201)


# --- licences -----------------------------------------------------------------------------


@router.get("/licences")
def get_licences(op: OperatorDep, conn: Conn, principal: PrincipalQuery,
                 device: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
                 ) -> Response:
    """Licences by id, of one device and/or one paying principal (a technician: its own)."""
    with mapped_errors(), conn.transaction():
        if device is not None:
            scoped_device(conn, op, device)
        rows = licences.list_licences(conn, device_id=device, principal=principal)
    return json_response({"items": rows})


@router.post("/licences", status_code=201)
def create_licence(body: LicenceCreate, op: OperatorDep, conn: Conn) -> Response:
    """Give a device a licence; a technician's device and payer are its own principal's."""
    # An admin's payer defaults to the device's owner; a technician pays as its principal.
    payer = body.principal if op.scope is None else op.principal_for(body.principal)
    with mapped_errors(), conn.transaction():
        scoped_device(conn, op, body.device_id)
        row = licences.start_licence(
            conn, device_id=body.device_id, terms=body.terms, start_date=body.start_date,
            actor=op.actor, principal=payer, unit=body.unit, end_date=body.end_date)
    return json_response(row, 201)


def _scoped_licence(conn: Conn, op: Operator, licence_id: int) -> None:
    """404 unless the licence exists on a device the operator may touch."""
    found = conn.execute("SELECT device_id FROM licences WHERE id = %s",
                         (licence_id,)).fetchone()
    missing = HTTPException(404, f"licence {licence_id} not found")
    if found is None:
        raise missing
    try:
        scoped_device(conn, op, str(found[0]))
    except HTTPException:
        raise missing from None


@router.post("/licences/{licence_id}/end")
def finish_licence(licence_id: int, body: LicenceEnd, op: OperatorDep, conn: Conn) -> Response:
    """Set the last day of a licence on one of the caller's devices."""
    with mapped_errors(), conn.transaction():
        _scoped_licence(conn, op, licence_id)
        row = licences.end_licence(conn, licence_id=licence_id, end_date=body.end_date,
                                   actor=op.actor, reason=body.reason)
    return json_response(row)


# --- bulk onboarding and the Sesam CSV ----------------------------------------------------


def _records(text: str) -> tuple[list[str], list[tuple[int, int, dict[str, str | None]]]]:
    """The physical lines, and each record's first and last line (1-based) and fields."""
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is not None:
        reader.fieldnames = [name.strip() for name in reader.fieldnames]
    records: list[tuple[int, int, dict[str, str | None]]] = []
    last = reader.line_num
    for row in reader:
        records.append((last + 1, reader.line_num, dict(row)))
        last = reader.line_num
    return lines, records


def _confine(text: str, scope: str) -> tuple[str, list[dict[str, Any]]]:
    """The CSV with other principals' rows blanked (line numbers kept), and their refusals.

    Blank lines are skipped by the CSV reader but still counted, so every line number the
    bulk onboarding reports stays that of the uploaded file.
    """
    try:
        lines, records = _records(text)
    except csv.Error:
        return text, []  # bulk.onboard_csv refuses it with its own message
    refused: list[dict[str, Any]] = []
    for first, last, row in records:
        if None in row or None in row.values():
            continue  # malformed: bulk.onboard_csv refuses the row itself
        named = (row.get("principal") or "").strip()
        if named and named != scope:
            refused.append({
                "line": last, "serial": (row.get("serial") or "").strip() or None,
                "reason": f"line {last}: refused: a technician of principal {scope} may not"
                          f" onboard devices for principal {named}"})
            for index in range(first - 1, min(last, len(lines))):
                lines[index] = "\n"
    return "".join(lines), refused


def device_broker() -> str | None:
    """The broker address for provisioning bundles (AIDLINK_DEVICE_BROKER_URL, else the host
    and port of AIDLINK_MQTT_URL), never with credentials; None when none is configured."""
    try:
        return device_broker_url(load_settings())
    except ConfigurationError as exc:
        raise HTTPException(503, f"provisioning bundles cannot be made: {exc}") from exc


DeviceBroker = Annotated[str | None, Depends(device_broker)]


@router.post("/devices/bulk")
def bulk_onboard(op: OperatorDep, conn: Conn, ca: Passphrase, text: CsvBody,
                 broker: BrokerDir, broker_url: DeviceBroker) -> Response:
    """Onboard every CSV row that complies; refused rows are named by line and rule, and
    each onboarded device's bundle is returned (as ``POST /v1/devices`` returns one).

    ``bulk.onboard_csv`` commits every batch itself, so it runs outside a request transaction.
    """
    refused: list[dict[str, Any]] = []
    if op.scope is not None:
        text, refused = _confine(text, op.scope)
    with mapped_errors():
        result = bulk.onboard_csv(conn, ca, text, actor=op.actor, broker_url=broker_url)
    if any("mqtt_password" in row for row in result.onboarded):
        # Password devices connect only once the broker's password file holds them.
        sync(conn, ca, broker, {})
    result.refused = sorted(result.refused + refused, key=lambda r: int(r["line"]))
    result.total += len(refused)
    return json_response({"counts": result.counts(), "onboarded": result.onboarded,
                          "refused": result.refused})


@router.get("/devices.csv")
def export_devices(conn: Conn, principal: PrincipalQuery) -> Response:
    """Devices with their Sesam numbers as CSV (a technician: its principal's)."""
    with mapped_errors(), conn.transaction():
        text = reports.devices_csv(conn, principal=principal)
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="devices.csv"'})


def _check_devices(conn: Conn, op: Operator, text: str) -> None:
    """404 naming the line of a device the operator may not touch (all lines or none)."""
    try:
        lines, records = _records(text)
    except csv.Error:
        return  # licences.import_devices_csv refuses it with its own message
    del lines
    for _first, last, row in records:
        device_id = (row.get("device_id") or "").strip()
        if device_id and isinstance(row.get("device_id"), str):
            try:
                scoped_device(conn, op, device_id)
            except HTTPException as exc:
                raise HTTPException(404, f"line {last}, column device_id: device"
                                         f" {device_id} not found") from exc


@router.post("/devices/traceability.csv")
def import_traceability(op: OperatorDep, conn: Conn, text: CsvBody) -> Response:
    """Set Sesam numbers from CSV (as ``/devices.csv`` writes it), all lines or none."""
    with mapped_errors(), conn.transaction():
        if op.scope is not None:
            _check_devices(conn, op, text)
        result = licences.import_devices_csv(conn, text, actor=op.actor)
    return json_response(result)
