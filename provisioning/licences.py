"""Vendors, products, licence terms, the licences devices hold, and Sesam traceability.

Traceability: a device carries its Sesam article number and individual number, set one by one
or imported as CSV (what ``reports.devices_csv`` writes), so it can be followed across both
systems. What licences cost per month is ``provisioning.reports.monthly_charge``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from provisioning import service
from provisioning.errors import ConflictError, InvalidInputError, NotFoundError
from provisioning.lifecycle import lock_device, record, require_reason

Conn = psycopg.Connection[Any]
PERIODS = ("monthly", "yearly")
ACQUISITIONS = ("rent", "buy")
CODE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
# Sesam article and individual numbers: digits mostly, sometimes letters and separators.
SESAM_NUMBER = re.compile(r"^[A-Za-z0-9._/-]{1,32}$")
PRODUCT_CLASS = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
DEVICE_COLUMNS = ("device_id", "principal", "model", "serial", "state", "article_number",
                  "individual_number")
_ORE = Decimal("0.01")


def check(pattern: re.Pattern[str], value: str, field: str) -> str:
    """The value if it matches the pattern, else InvalidInputError naming the field."""
    if not pattern.fullmatch(value):
        raise InvalidInputError(f"{field} {value!r} is not valid (pattern {pattern.pattern})")
    return value


def _name(value: str, field: str) -> str:
    if not value.strip() or len(value.strip()) > 200:
        raise InvalidInputError(f"{field} must be 1 to 200 characters, not {value!r}")
    return value.strip()


@dataclass(frozen=True, slots=True)
class Terms:
    """What a licence of a product costs; validates itself."""

    code: str
    article_number: str
    period: str
    price: Decimal
    device_included: bool
    acquisition: str
    device_price: Decimal | None

    def __post_init__(self) -> None:
        check(CODE, self.code, "terms code")
        for field, value, allowed in (("period", self.period, PERIODS),
                                      ("acquisition", self.acquisition, ACQUISITIONS)):
            if value not in allowed:
                raise InvalidInputError(
                    f"terms {self.code}: {field} {value!r} is not one of {', '.join(allowed)}")
        for field, amount in (("price", self.price), ("device price", self.device_price)):
            if amount is not None and (not amount.is_finite() or amount < 0
                                       or amount != amount.quantize(_ORE)):
                raise InvalidInputError(f"terms {self.code}: {field} {amount} must be a"
                                        " non-negative amount in whole öre")
        if self.device_included != (self.device_price is None):
            raise InvalidInputError(f"terms {self.code}: a device price is required exactly"
                                    " when the device is not included")


def _need_product(conn: Conn, article: str, where: str = "") -> None:
    if conn.execute("SELECT 1 FROM products WHERE article_number = %s",
                    (article,)).fetchone() is None:
        raise NotFoundError(f"{where}product with article number {article} does not exist")


def add_vendor(conn: Conn, *, code: str, name: str) -> dict[str, Any]:
    """Register a vendor of products and licences."""
    check(CODE, code, "vendor code")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("INSERT INTO vendors (code, name) VALUES (%s, %s) ON CONFLICT DO NOTHING"
                    " RETURNING code, name", (code, _name(name, "vendor name")))
        row = cur.fetchone()
    if row is None:
        raise ConflictError(f"vendor {code} already exists")
    return row


def add_product(conn: Conn, *, article_number: str, name: str, product_class: str,
                vendor: str) -> dict[str, Any]:
    """Register a product under its Sesam article number."""
    check(SESAM_NUMBER, article_number, "article number")
    check(PRODUCT_CLASS, product_class, "product class")
    if conn.execute("SELECT 1 FROM vendors WHERE code = %s", (vendor,)).fetchone() is None:
        raise NotFoundError(f"vendor {vendor} does not exist")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "INSERT INTO products (article_number, name, product_class, vendor_code)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
            " RETURNING article_number, name, product_class, vendor_code AS vendor",
            (article_number, _name(name, "product name"), product_class, vendor),
        )
        row = cur.fetchone()
    if row is None:
        raise ConflictError(f"product with article number {article_number} already exists")
    return row


def add_terms(conn: Conn, *, code: str, article_number: str, period: str, price: Decimal,
              device_included: bool, acquisition: str,
              device_price: Decimal | None = None) -> dict[str, Any]:
    """Register licence terms for a product; device_price only when the device is extra."""
    terms = Terms(code, article_number, period, price, device_included, acquisition,
                  device_price)
    _need_product(conn, article_number)
    row = conn.execute(
        "INSERT INTO licence_terms (code, article_number, period, price, device_included,"
        " acquisition, device_price) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING code",
        (code, article_number, period, price, device_included, acquisition, device_price),
    ).fetchone()
    if row is None:
        raise ConflictError(f"licence terms {code} already exist")
    return asdict(terms)


def get_terms(conn: Conn, code: str) -> Terms:
    """Licence terms by code, or NotFoundError naming them."""
    row = conn.execute(
        "SELECT code, article_number, period, price, device_included, acquisition, device_price"
        " FROM licence_terms WHERE code = %s", (code,)).fetchone()
    if row is None:
        raise NotFoundError(f"licence terms {code} do not exist")
    return Terms(*row)


def _check_traceability(conn: Conn, article: str | None, individual: str | None,
                        where: Callable[[str], str]) -> None:
    # ``where`` names the place in the caller's terms: a device, or a CSV line and column.
    if article is not None:
        check(SESAM_NUMBER, article, f"{where('article_number')}: article number")
        _need_product(conn, article, f"{where('article_number')}: ")
    if individual is not None:
        check(SESAM_NUMBER, individual, f"{where('individual_number')}: individual number")
        if article is None:
            raise InvalidInputError(
                f"{where('individual_number')}: an individual number needs an article number")


@dataclass(frozen=True, slots=True)
class _Change:
    where: Callable[[str], str]
    device: dict[str, Any]
    article: str | None
    individual: str | None
    reason: str


def _apply(conn: Conn, changes: list[_Change], actor: str) -> None:
    ids = [change.device["id"] for change in changes]
    for change in changes:
        holder = conn.execute(
            "SELECT id FROM devices WHERE article_number = %s AND individual_number = %s"
            " AND NOT id = ANY(%s)", (change.article, change.individual, ids)).fetchone()
        if holder is not None:
            raise ConflictError(f"{change.where('individual_number')}: article {change.article}"
                                f" individual {change.individual} is already device {holder[0]}")
    # Clear first, so that numbers moving between the changed devices never collide.
    conn.execute("UPDATE devices SET article_number = NULL, individual_number = NULL"
                 " WHERE id = ANY(%s)", (ids,))
    for change in changes:
        conn.execute("UPDATE devices SET article_number = %s, individual_number = %s"
                     " WHERE id = %s", (change.article, change.individual, change.device["id"]))
        record(conn, change.device, "traceability_set", actor, article_number=change.article,
               individual_number=change.individual, reason=change.reason)


def set_traceability(conn: Conn, *, device_id: str, article_number: str | None,
                     individual_number: str | None, actor: str,
                     reason: str = "Sesam traceability set") -> dict[str, Any]:
    """Record a device's Sesam article and individual number (None clears them)."""
    with conn.transaction():
        device = lock_device(conn, device_id)
        def where(_column: str) -> str:
            return f"device {device_id}"

        _check_traceability(conn, article_number, individual_number, where)
        _apply(conn, [_Change(where, device, article_number, individual_number, reason)], actor)
    return {"device_id": device_id, "article_number": article_number,
            "individual_number": individual_number}


def import_devices_csv(conn: Conn, text: str, *, actor: str,
                       reason: str = "Sesam CSV import") -> dict[str, int]:
    """Set Sesam numbers from CSV, all lines or none; errors name the line and column.

    ``device_id``, ``article_number`` and ``individual_number`` are required; ``principal``,
    ``model`` and ``serial``, when present, must match the device (catching a shifted row);
    ``state`` is ignored, as it is not Sesam's to set.
    """
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = list(reader.fieldnames or [])
    for column in header:
        if column not in DEVICE_COLUMNS:
            raise InvalidInputError(f"line 1, column {column}: unknown column; the columns are"
                                    f" {', '.join(DEVICE_COLUMNS)}")
    for column in ("device_id", "article_number", "individual_number"):
        if column not in header:
            raise InvalidInputError(f"line 1, column {column}: the column is missing")
    lines: dict[str, int] = {}
    numbers: dict[tuple[str, str], int] = {}
    changes: list[_Change] = []
    with conn.transaction():
        for row in reader:
            line = reader.line_num
            if None in row or None in row.values():
                raise InvalidInputError(f"line {line}: {len(header)} fields expected")
            device_id = row["device_id"].strip()
            # line is a number, so the format string cannot be hijacked by the file's text.
            where = f"line {line}, column {{}}".format
            if device_id in lines:
                raise InvalidInputError(
                    f"{where('device_id')}: device {device_id} is also on line {lines[device_id]}")
            lines[device_id] = line
            try:
                device = lock_device(conn, device_id)
            except NotFoundError as exc:
                raise NotFoundError(f"{where('device_id')}: {exc}") from exc
            for column, stored in (("principal", device["principal_code"]),
                                   ("model", device["model"]), ("serial", device["serial"])):
                if column in row and row[column] != stored:
                    raise ConflictError(f"{where(column)}: {row[column]!r} does not match device"
                                        f" {device_id}, whose {column} is {stored!r}")
            article = row["article_number"].strip() or None
            individual = row["individual_number"].strip() or None
            _check_traceability(conn, article, individual, where)
            if article is not None and individual is not None:
                if (article, individual) in numbers:
                    raise ConflictError(
                        f"{where('individual_number')}: article {article} individual"
                        f" {individual} is also on line {numbers[article, individual]}")
                numbers[article, individual] = line
            if (article, individual) != (device["article_number"], device["individual_number"]):
                changes.append(
                    _Change(where, device, article, individual, f"{reason}, line {line}"))
        _apply(conn, changes, actor)
    return {"lines": len(lines), "changed": len(changes)}


_LICENCE_SELECT = (
    "SELECT id, terms_code AS terms, device_id, principal_code AS principal, unit,"
    " start_date, end_date FROM licences"
)


def _licence_out(row: dict[str, Any]) -> dict[str, Any]:
    # ISO dates, so that the result goes straight to JSON.
    return {**row, "start_date": row["start_date"].isoformat(),
            "end_date": None if row["end_date"] is None else row["end_date"].isoformat()}


def start_licence(conn: Conn, *, device_id: str, terms: str, start_date: date, actor: str,
                  principal: str | None = None, unit: str | None = None,
                  end_date: date | None = None) -> dict[str, Any]:
    """Give a device a licence; paid by ``principal`` (default: the device's owner)."""
    if end_date is not None and end_date < start_date:
        raise InvalidInputError(f"licence for device {device_id}: end date {end_date}"
                                f" is before start date {start_date}")
    if unit is not None and not 1 <= len(unit) <= 64:
        raise InvalidInputError(f"licence for device {device_id}: unit must be 1 to 64"
                                f" characters, not {unit!r}")
    with conn.transaction():
        device = lock_device(conn, device_id)
        chosen = get_terms(conn, terms)
        payer = service.get_principal(conn, principal or device["principal_code"])["code"]
        if device["state"] == "retired":
            raise ConflictError(f"device {device_id} is retired; it cannot hold a licence")
        if device["article_number"] != chosen.article_number:
            raise ConflictError(
                f"device {device_id} has article number {device['article_number']}; terms"
                f" {terms} license article {chosen.article_number} only")
        overlap = conn.execute(
            "SELECT id FROM licences WHERE device_id = %s AND terms_code = %s"
            " AND start_date <= COALESCE(%s::date, 'infinity')"
            " AND COALESCE(end_date, 'infinity') >= %s::date",
            (device_id, terms, end_date, start_date)).fetchone()
        if overlap is not None:
            raise ConflictError(f"device {device_id} already holds licence {overlap[0]} on"
                                f" terms {terms} in that period")
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "INSERT INTO licences (terms_code, device_id, principal_code, unit, start_date,"
                " end_date, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " RETURNING id, terms_code AS terms, device_id, principal_code AS principal,"
                " unit, start_date, end_date",
                (terms, device_id, payer, unit, start_date, end_date, actor))
            row = _licence_out(cur.fetchone() or {})
        record(conn, device, "licence_started", actor, licence=row["id"], terms=terms,
               principal=payer, unit=unit, start_date=row["start_date"],
               end_date=row["end_date"], reason="licence started")
    return row


def end_licence(conn: Conn, *, licence_id: int, end_date: date, actor: str,
                reason: str) -> dict[str, Any]:
    """Set the last day of a licence."""
    reason = require_reason(reason)
    with conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(_LICENCE_SELECT + " WHERE id = %s FOR UPDATE", (licence_id,))
            found = cur.fetchone()
        if found is None:
            raise NotFoundError(f"licence {licence_id} does not exist")
        if end_date < found["start_date"]:
            raise InvalidInputError(f"licence {licence_id}: end date {end_date} is before its"
                                    f" start date {found['start_date']}")
        conn.execute("UPDATE licences SET end_date = %s WHERE id = %s", (end_date, licence_id))
        device = lock_device(conn, found["device_id"])
        record(conn, device, "licence_ended", actor, licence=licence_id,
               end_date=end_date.isoformat(), reason=reason)
    return _licence_out({**found, "end_date": end_date})


def list_licences(conn: Conn, *, device_id: str | None = None,
                  principal: str | None = None) -> list[dict[str, Any]]:
    """Licences, optionally of one device or one paying principal, by id."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            _LICENCE_SELECT + " WHERE (%s::text IS NULL OR device_id = %s)"
            " AND (%s::text IS NULL OR principal_code = %s) ORDER BY id",
            (device_id, device_id, principal, principal))
        return [_licence_out(row) for row in cur.fetchall()]
