"""Orders from the ordering portal and the assignments that deliver them.

An order (CSV from webSesam: who, for which patient, what, when ordered) ends when a device
of what was ordered is assigned to that patient at that principal at or after the order time.
The match happens both ways round, so the order of events does not matter:

- at assignment: ``aidlink device assign … --order ID`` names the order, and a mismatch
  (another patient, another product, an order placed later, one already delivered) refuses
  the assignment; without ``--order`` the patient's oldest open order that the device fits is
  taken, if there is one;
- at import: an order whose delivery was assigned before the portal's file came in is matched
  to the earliest fitting assignment made at or after its order time that delivers no other
  order.

A swap (provisioning/swap.py) delivers no order: the patient already had the product.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from provisioning.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ProvisioningError,
)
from provisioning.patients import patient_key
from provisioning.workdays import ZONE

Conn = psycopg.Connection[Any]
REQUIRED = ("order_id", "principal", "patient", "ordered_at")
OPTIONAL = ("unit", "model", "article_number")
COLUMNS = REQUIRED + OPTIONAL
_ORDER_ID = re.compile(r"^[A-Za-z0-9._:/-]{1,64}$")
# The stored values compared on a re-import; the patient as its pseudonym.
_COMPARED = ("unit", "patient_key", "model", "article_number", "ordered_at")
# An order the device fits: what it wants is the device's model and/or article number.
_FITS = ("(o.model IS NULL OR o.model = d.model)"
         " AND (o.article_number IS NULL OR o.article_number = d.article_number)")


def check_order_id(order_id: str) -> str:
    """The order id if well formed, else InvalidInputError naming it."""
    if not _ORDER_ID.fullmatch(order_id):
        raise InvalidInputError(f"order id {order_id!r} must be 1-64 letters, digits or ._:/-")
    return order_id


def parse_ordered_at(text: str) -> datetime:
    """An order time: ISO 8601, with an offset or else Stockholm local time (as the portal
    exports it); a date without a time is refused, since lead times start from the time."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(f"ordered_at {text!r} is not an ISO 8601 time"
                                " (e.g. 2025-04-17 14:30 or 2025-04-17T12:30:00Z)") from None
    if "T" not in text.upper() and " " not in text.strip():
        raise InvalidInputError(f"ordered_at {text!r} has no time of day")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=ZONE)


def _fulfil(conn: Conn, order: dict[str, Any], assignment: dict[str, Any], actor: str) -> None:
    conn.execute(
        "UPDATE orders SET device_id = %s, assignment_id = %s, fulfilled_at = %s,"
        " fulfilled_by = %s WHERE principal_code = %s AND order_id = %s",
        (assignment["device_id"], assignment["id"], assignment["valid_from"], actor,
         order["principal_code"], order["order_id"]))


def _named_order(conn: Conn, principal: str, order_id: str,
                 assignment: dict[str, Any]) -> dict[str, Any]:
    """The order an assignment names, checked against it; the reason it cannot be otherwise."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT o.*, d.model AS device_model, d.article_number AS device_article,"
            f" {_FITS} AS fits FROM orders o, devices d"
            " WHERE o.principal_code = %s AND o.order_id = %s AND d.id = %s FOR UPDATE OF o",
            (principal, check_order_id(order_id), assignment["device_id"]))
        order = cur.fetchone()
    if order is None:
        raise NotFoundError(f"order {order_id} of principal {principal} does not exist")
    if order["assignment_id"] is not None:
        raise ConflictError(f"order {order_id} was already delivered by device"
                            f" {order['device_id']} at {order['fulfilled_at'].isoformat()}")
    if order["patient_key"] != assignment["patient_key"]:
        raise ConflictError(f"order {order_id} is for another patient")
    if not order["fits"]:
        wanted = " and ".join(f"{what} {order[key]}" for what, key in (
            ("model", "model"), ("article number", "article_number")) if order[key])
        raise ConflictError(
            f"order {order_id} wants {wanted}; device {assignment['device_id']} is model"
            f" {order['device_model']}, article number {order['device_article'] or 'unknown'}")
    if order["ordered_at"] > assignment["valid_from"]:
        raise ConflictError(f"order {order_id} was placed at {order['ordered_at'].isoformat()},"
                            " after this assignment")
    return order


def fulfil_on_assign(conn: Conn, *, assignment: dict[str, Any], principal: str, actor: str,
                     order_id: str | None = None) -> str | None:
    """Mark the order a new assignment delivers (``order_id``, else the oldest fitting open
    one of the patient); the order id, or None. Runs in the assignment's transaction."""
    if order_id is not None:
        order = _named_order(conn, principal, order_id, assignment)
    else:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT o.principal_code, o.order_id FROM orders o JOIN devices d ON d.id = %s"
                f" WHERE o.principal_code = %s AND o.patient_key = %s AND {_FITS}"
                " AND o.assignment_id IS NULL AND o.ordered_at <= %s"
                " ORDER BY o.ordered_at, o.order_id LIMIT 1 FOR UPDATE OF o SKIP LOCKED",
                (assignment["device_id"], principal, assignment["patient_key"],
                 assignment["valid_from"]))
            found = cur.fetchone()
        if found is None:
            return None
        order = found
    _fulfil(conn, order, assignment, actor)
    return str(order["order_id"])


def _match_earlier_assignment(conn: Conn, order: dict[str, Any], actor: str) -> None:
    """Fulfil a just imported order by an assignment already made, if one fits."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT a.id, a.device_id, a.valid_from FROM assignments a"
            " JOIN devices d ON d.id = a.device_id"
            " JOIN orders o ON o.principal_code = %s AND o.order_id = %s"
            f" WHERE a.principal_code = o.principal_code AND a.patient_key = o.patient_key"
            f" AND a.valid_from >= o.ordered_at AND {_FITS}"
            # A swap's assignment replaces a device; it is no delivery (module docstring).
            " AND NOT EXISTS (SELECT 1 FROM device_history h WHERE h.device_id = a.device_id"
            "   AND h.action = 'assigned' AND h.detail ->> 'assignment' = a.id::text"
            "   AND h.detail ? 'replaces')"
            " AND NOT EXISTS (SELECT 1 FROM orders f WHERE f.assignment_id = a.id)"
            " ORDER BY a.valid_from, a.id LIMIT 1",
            (order["principal_code"], order["order_id"]))
        assignment = cur.fetchone()
    if assignment is not None:
        _fulfil(conn, order, assignment, actor)
        order["delivered_by"] = assignment["device_id"]


def _import_row(conn: Conn, secret: bytes, row: dict[str, str | None], actor: str,
                only_principal: str | None) -> tuple[str, dict[str, Any]]:
    """Import one row (the caller holds its savepoint): ("imported"|"unchanged", order)."""
    for column in REQUIRED:
        if not row.get(column):
            raise InvalidInputError(f"{column} is empty")
    principal = str(row["principal"])
    if only_principal is not None and principal != only_principal:
        # Refused for what the caller is, whether or not that principal exists.
        raise ConflictError(f"a technician of principal {only_principal} may not import"
                            f" orders for principal {principal}")
    if row.get("model") is None and row.get("article_number") is None:
        raise InvalidInputError("give model or article_number (what was ordered)")
    if conn.execute("SELECT 1 FROM principals WHERE code = %s", (principal,)).fetchone() is None:
        raise NotFoundError(f"principal {principal} does not exist")
    order = {"principal_code": principal, "order_id": check_order_id(str(row["order_id"])),
             "unit": row.get("unit"), "patient_key": patient_key(secret, principal,
                                                                 str(row["patient"])),
             "model": row.get("model"), "article_number": row.get("article_number"),
             "ordered_at": parse_ordered_at(str(row["ordered_at"]))}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "INSERT INTO orders (principal_code, order_id, unit, patient_key, model,"
            " article_number, ordered_at, imported_by) VALUES (%(principal_code)s,"
            " %(order_id)s, %(unit)s, %(patient_key)s, %(model)s, %(article_number)s,"
            " %(ordered_at)s, %(actor)s) ON CONFLICT DO NOTHING RETURNING order_id",
            {**order, "actor": actor})
        if cur.fetchone() is None:
            cur.execute("SELECT * FROM orders WHERE principal_code = %s AND order_id = %s",
                        (principal, order["order_id"]))
            stored = cur.fetchone()
            assert stored is not None
            changed = [key for key in _COMPARED if stored[key] != order[key]]
            if changed:
                shown = ", ".join("patient" if key == "patient_key" else key for key in changed)
                raise ConflictError(f"order {order['order_id']} is already imported with"
                                    f" another {shown}")
            return "unchanged", order
    _match_earlier_assignment(conn, order, actor)
    return "imported", order


def _rows(text: str) -> list[tuple[int, dict[str, str | None]]]:
    """Each data row with the line it ends on; InvalidInputError for a bad header."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip() for name in reader.fieldnames or []]
    unknown = [name for name in header if name not in COLUMNS]
    if unknown:
        raise InvalidInputError(f"line 1, column {unknown[0]}: unknown column; the columns are"
                                f" {', '.join(COLUMNS)}")
    for column in REQUIRED:
        if column not in header:
            raise InvalidInputError(f"line 1, column {column}: the column is missing")
    reader.fieldnames = header
    rows: list[tuple[int, dict[str, str | None]]] = []
    for raw in reader:
        if None in raw or None in raw.values():
            rows.append((reader.line_num, {"": f"{len(header)} fields expected"}))
            continue
        rows.append((reader.line_num, {key: (value or "").strip() or None
                                       for key, value in raw.items()}))
    return rows


def import_csv(conn: Conn, secret: bytes, text: str, *, actor: str,
               only_principal: str | None = None) -> dict[str, Any]:
    """Import orders from CSV (COLUMNS), idempotently by principal and order id; every bad
    row is refused with its line and reason, the rest committed in one transaction."""
    try:
        rows = _rows(text)
    except csv.Error as exc:
        raise InvalidInputError(f"the CSV cannot be read: {exc}") from exc
    imported: list[dict[str, Any]] = []
    unchanged: list[str] = []
    refused: list[dict[str, Any]] = []
    seen: dict[tuple[str | None, str | None], int] = {}
    with conn.transaction():
        for line, row in rows:
            key = (row.get("principal"), row.get("order_id"))
            try:
                if "" in row:
                    raise InvalidInputError(str(row[""]))
                if key in seen:
                    raise ConflictError(f"order {key[1]} is also on line {seen[key]}")
                seen[key] = line
                with conn.transaction():
                    outcome, order = _import_row(conn, secret, row, actor, only_principal)
            except (ProvisioningError, psycopg.DataError, psycopg.IntegrityError) as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                refused.append({"line": line, "order_id": row.get("order_id"),
                                "reason": f"line {line}: {reason}"})
                continue
            if outcome == "unchanged":
                unchanged.append(order["order_id"])
            else:
                imported.append({"order_id": order["order_id"],
                                 "principal": order["principal_code"],
                                 "delivered_by": order.get("delivered_by")})
    return {"counts": {"rows": len(rows), "imported": len(imported),
                       "unchanged": len(unchanged), "refused": len(refused)},
            "imported": imported, "unchanged": unchanged, "refused": refused}
