"""Fleet and cost reports: lists of JSON-able dicts, and the same as CSV text (``to_csv``).

Money is a Decimal in SEK with two places (``adapters.model.dumps`` writes it as an exact JSON
number); dates and times are ISO 8601 text, times in UTC.

Cost rule (charged to the paying principal at cost price, no mark-up): a licence runs from
its start date to its end date, both included. A month is charged the monthly price, or a
twelfth of the yearly price, times the days the licence ran in that month over the month's
days, rounded half-up to whole öre per licence and month. A device not included in the price
costs ``device_price`` on top: when rented, per period and prorated in the same way; when
bought, once and in full in the month the licence starts.
"""

from __future__ import annotations

import calendar
import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from provisioning.errors import InvalidInputError
from provisioning.licences import DEVICE_COLUMNS, Terms

Conn = psycopg.Connection[Any]
# The devices centre's calendar decides what "today" and "this month" are.
CENTRE_ZONE = ZoneInfo("Europe/Stockholm")
_ORE = Decimal("0.01")
_ZERO = Decimal("0.00")
COLUMNS: dict[str, tuple[str, ...]] = {
    "costs": ("month", "principal", "unit", "licences", "subscription_sek", "device_sek",
              "total_sek"),
    "expiring": ("licence_id", "end_date", "days_left", "device_id", "article_number",
                 "individual_number", "terms", "principal", "unit"),
    "unlicensed": ("device_id", "principal", "model", "serial", "article_number",
                   "individual_number", "assigned_since"),
    "idle": ("licence_id", "device_id", "state", "reason", "last_reading_at", "terms",
             "principal", "unit"),
    "deliveries": ("month", "principal", "product_class", "delivered"),
    "overdue": ("device_id", "principal", "model", "unit", "planned_until", "days_overdue"),
    "devices": DEVICE_COLUMNS,
}


@dataclass(frozen=True, slots=True)
class Charge:
    """One licence's charge for one month, in SEK."""

    subscription: Decimal
    device: Decimal

    @property
    def total(self) -> Decimal:
        """Subscription and device together."""
        return self.subscription + self.device


def monthly_charge(terms: Terms, *, start: date, end: date | None, month: date) -> Charge:
    """What a licence on these terms, held from start to end, costs in ``month``'s month."""
    first = month.replace(day=1)
    last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
    begin, until = max(start, first), min(end or last, last)
    if until < begin:
        return Charge(_ZERO, _ZERO)
    # One division at the end, so that no intermediate rounding creeps into the figure.
    divisor = Decimal(last.day * (12 if terms.period == "yearly" else 1))
    days = Decimal((until - begin).days + 1)

    def prorated(amount: Decimal) -> Decimal:
        return (amount * days / divisor).quantize(_ORE, rounding=ROUND_HALF_UP)

    device = _ZERO
    if terms.device_price is not None and terms.acquisition == "rent":
        device = prorated(terms.device_price)
    elif terms.device_price is not None and first <= start <= last:
        device = terms.device_price.quantize(_ORE)
    return Charge(prorated(terms.price), device)


def _today() -> date:
    return datetime.now(CENTRE_ZONE).date()


def _utc_text(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def monthly_costs(conn: Conn, *, month: date, principal: str | None = None
                  ) -> list[dict[str, Any]]:
    """What each paying principal and unit owes for ``month``'s month, by principal and unit."""
    first = month.replace(day=1)
    last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
    rows = conn.execute(
        "SELECT l.principal_code, l.unit, l.start_date, l.end_date, t.code, t.article_number,"
        " t.period, t.price, t.device_included, t.acquisition, t.device_price"
        " FROM licences l JOIN licence_terms t ON t.code = l.terms_code"
        " WHERE l.start_date <= %s AND (l.end_date IS NULL OR l.end_date >= %s)"
        " AND (%s::text IS NULL OR l.principal_code = %s)",
        (last, first, principal, principal)).fetchall()
    totals: dict[tuple[str, str | None], list[Any]] = {}
    for payer, unit, start, end, *terms in rows:
        charge = monthly_charge(Terms(*terms), start=start, end=end, month=first)
        total = totals.setdefault((payer, unit), [0, _ZERO, _ZERO])
        total[0] += 1
        total[1] += charge.subscription
        total[2] += charge.device
    return [
        {"month": first.strftime("%Y-%m"), "principal": payer, "unit": unit, "licences": count,
         "subscription_sek": subscription, "device_sek": device,
         "total_sek": subscription + device}
        for (payer, unit), (count, subscription, device)
        in sorted(totals.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    ]


def expiring_licences(conn: Conn, *, within_days: int, today: date | None = None,
                      principal: str | None = None) -> list[dict[str, Any]]:
    """Licences whose last day falls within the next ``within_days`` days, soonest first."""
    if within_days < 0:
        raise InvalidInputError(f"within days must not be negative, not {within_days}")
    day = today or _today()
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT l.id AS licence_id, l.end_date, l.end_date - %s::date AS days_left,"
            " l.device_id, d.article_number, d.individual_number, l.terms_code AS terms,"
            " l.principal_code AS principal, l.unit"
            " FROM licences l JOIN devices d ON d.id = l.device_id"
            " WHERE l.end_date BETWEEN %s::date AND %s::date"
            " AND (%s::text IS NULL OR l.principal_code = %s) ORDER BY l.end_date, l.id",
            (day, day, day + timedelta(days=within_days), principal, principal))
        return [{**row, "end_date": row["end_date"].isoformat()} for row in cur.fetchall()]


def unlicensed_devices(conn: Conn, *, today: date | None = None,
                       principal: str | None = None) -> list[dict[str, Any]]:
    """Devices assigned to a patient that hold no licence today, by owner and device."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT d.id AS device_id, d.principal_code AS principal, d.model, d.serial,"
            " d.article_number, d.individual_number, a.valid_from AS assigned_since"
            " FROM devices d"
            " LEFT JOIN assignments a ON a.device_id = d.id AND a.valid_to IS NULL"
            " WHERE d.state = 'assigned' AND (%s::text IS NULL OR d.principal_code = %s)"
            " AND NOT EXISTS (SELECT 1 FROM licences l WHERE l.device_id = d.id"
            " AND l.start_date <= %s AND (l.end_date IS NULL OR l.end_date >= %s))"
            " ORDER BY d.principal_code, d.id",
            (principal, principal, today or _today(), today or _today()))
        return [{**row, "assigned_since": _utc_text(row["assigned_since"])}
                for row in cur.fetchall()]


def idle_licences(conn: Conn, *, idle_days: int, now: datetime | None = None,
                  principal: str | None = None) -> list[dict[str, Any]]:
    """Licences running today on a device not with a patient, or silent for ``idle_days``.

    ``reason`` is the device's state when it is not assigned, else ``idle``. A reading is the
    newest observation or event the gateway received (received_at: a device's own clock can
    be years off); a device just assigned counts from its assignment, not as idle at once.
    """
    if idle_days < 1:
        raise InvalidInputError(f"idle days must be at least 1, not {idle_days}")
    moment = now or datetime.now(UTC)
    day = moment.astimezone(CENTRE_ZONE).date()
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "WITH active AS (SELECT * FROM licences WHERE start_date <= %(day)s"
            "   AND (end_date IS NULL OR end_date >= %(day)s)"
            "   AND (%(principal)s::text IS NULL OR principal_code = %(principal)s)),"
            " readings AS ("
            "   SELECT device_id, max(received_at) AS at FROM observations"
            "   WHERE device_id IN (SELECT device_id FROM active) GROUP BY device_id"
            "   UNION ALL SELECT device_id, max(received_at) FROM events"
            "   WHERE device_id IN (SELECT device_id FROM active) GROUP BY device_id),"
            " last AS (SELECT device_id, max(at) AS at FROM readings GROUP BY device_id)"
            " SELECT l.id AS licence_id, l.device_id, d.state,"
            " CASE WHEN d.state = 'assigned' THEN 'idle' ELSE d.state END AS reason,"
            " last.at AS last_reading_at, l.terms_code AS terms, l.principal_code AS principal,"
            " l.unit FROM active l JOIN devices d ON d.id = l.device_id"
            " LEFT JOIN last ON last.device_id = l.device_id"
            " LEFT JOIN assignments a ON a.device_id = l.device_id AND a.valid_to IS NULL"
            " WHERE d.state <> 'assigned' OR GREATEST(last.at, a.valid_from) < %(cutoff)s"
            " ORDER BY l.principal_code, l.id",
            {"day": day, "principal": principal, "cutoff": moment - timedelta(days=idle_days)})
        return [{**row, "last_reading_at": _utc_text(row["last_reading_at"])}
                for row in cur.fetchall()]


def deliveries(conn: Conn, *, since: date, until: date, principal: str | None = None
               ) -> list[dict[str, Any]]:
    """Devices delivered (assigned to a patient) per month, principal and product class.

    Months are the principal's local calendar months; ``since`` counts, ``until`` does not.
    A device delivered again after reconditioning is another delivery. A device without an
    article number has product class None.
    """
    if until <= since:
        raise InvalidInputError(f"until {until} must be after since {since}")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT to_char(a.valid_from AT TIME ZONE p.zone, 'YYYY-MM') AS month,"
            " a.principal_code AS principal, pr.product_class, count(*)::int AS delivered"
            " FROM assignments a JOIN principals p ON p.code = a.principal_code"
            " JOIN devices d ON d.id = a.device_id"
            " LEFT JOIN products pr ON pr.article_number = d.article_number"
            " WHERE (a.valid_from AT TIME ZONE p.zone)::date >= %s"
            " AND (a.valid_from AT TIME ZONE p.zone)::date < %s"
            " AND (%s::text IS NULL OR a.principal_code = %s)"
            " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            (since, until, principal, principal))
        return cur.fetchall()


def overdue_assignments(conn: Conn, *, today: date | None = None,
                        principal: str | None = None) -> list[dict[str, Any]]:
    """Devices still with a patient after their assignment's planned last day, longest
    overdue first. ``unit`` is the prescribing unit; the patient is left out, as the list is
    for chasing the device back, not for care.
    """
    day = today or _today()
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT d.id AS device_id, d.principal_code AS principal, d.model,"
            " a.prescribing_unit AS unit, a.planned_until,"
            " %s::date - a.planned_until AS days_overdue"
            " FROM assignments a JOIN devices d ON d.id = a.device_id"
            " WHERE a.valid_to IS NULL AND d.state = 'assigned' AND a.planned_until < %s::date"
            " AND (%s::text IS NULL OR d.principal_code = %s)"
            " ORDER BY a.planned_until, d.principal_code, d.id",
            (day, day, principal, principal))
        return [{**row, "planned_until": row["planned_until"].isoformat()}
                for row in cur.fetchall()]


def devices_csv(conn: Conn, *, principal: str | None = None) -> str:
    """Devices with their Sesam numbers as CSV, by device id (``licences.import_devices_csv``)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id AS device_id, principal_code AS principal, model, serial, state,"
            " article_number, individual_number FROM devices"
            " WHERE %s::text IS NULL OR principal_code = %s ORDER BY id", (principal, principal))
        return to_csv("devices", cur.fetchall())


def to_csv(report: str, rows: Iterable[dict[str, Any]]) -> str:
    """A report's rows as RFC 4180 CSV with a header; None is an empty field."""
    if report not in COLUMNS:
        raise InvalidInputError(f"report {report!r} is not one of {', '.join(COLUMNS)}")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS[report])
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS[report]])
    return out.getvalue()
