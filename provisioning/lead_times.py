"""The lead-time report: per principal and month, how fast ordered devices reached patients.

Months are Stockholm calendar months. For each principal and month:

- ``ordered``: orders placed in the month;
- ``delivered``: orders delivered (assigned at the patient) in the month, and over those the
  ``median_days`` and ``p90_days`` lead time in working days (provisioning/workdays.py) and
  ``within_7_share``, the share delivered within seven working days (0-1, three decimals);
  p90 is the nearest rank: the smallest lead time that at least 90 % of deliveries met;
- ``open``: orders placed before the month ended that were not delivered by then (for the
  current month: by now), the backlog at the month's end.

Months run from a principal's first order to the current month; months with nothing ordered,
delivered or open are left out.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from provisioning.errors import InvalidInputError
from provisioning.service import Conn
from provisioning.workdays import TARGET_DAYS, ZONE, lead_time

COLUMNS = ("month", "principal", "ordered", "delivered", "median_days", "p90_days",
           "within_7_share", "open")


@dataclass(frozen=True, slots=True)
class _Order:
    principal: str
    ordered_at: datetime
    fulfilled_at: datetime | None


def _month(moment: datetime) -> date:
    return moment.astimezone(ZONE).date().replace(day=1)


def _next(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _start(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=ZONE)


def parse_month(text: str) -> date:
    """The first day of a YYYY-MM month; InvalidInputError naming the value otherwise."""
    try:
        return datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise InvalidInputError(f"month {text!r} is not YYYY-MM") from None


def p90(values: list[int]) -> int:
    """The nearest-rank 90th percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def _row(month: date, principal: str, orders: list[_Order], now: datetime) -> dict[str, Any]:
    end = min(_start(_next(month)), now)
    leads = [lead_time(o.ordered_at, o.fulfilled_at) for o in orders
             if o.fulfilled_at is not None and _month(o.fulfilled_at) == month]
    within = sum(1 for days in leads if days <= TARGET_DAYS)
    return {
        "month": month.strftime("%Y-%m"), "principal": principal,
        "ordered": sum(1 for o in orders if _month(o.ordered_at) == month),
        "delivered": len(leads),
        "median_days": Decimal(str(statistics.median(leads))) if leads else None,
        "p90_days": p90(leads) if leads else None,
        "within_7_share": (Decimal(within) / len(leads)).quantize(Decimal("0.001"))
        if leads else None,
        "open": sum(1 for o in orders if o.ordered_at < end
                    and (o.fulfilled_at is None or o.fulfilled_at >= end)),
    }


def lead_times(conn: Conn, *, principal: str | None = None, month: date | None = None,
               now: datetime | None = None) -> list[dict[str, Any]]:
    """The report's rows by month and principal; ``month`` limits it to one month."""
    moment = now or datetime.now(UTC)
    by_principal: dict[str, list[_Order]] = defaultdict(list)
    for row in conn.execute(
            "SELECT principal_code, ordered_at, fulfilled_at FROM orders"
            " WHERE %s::text IS NULL OR principal_code = %s ORDER BY principal_code, ordered_at",
            (principal, principal)):
        by_principal[row[0]].append(_Order(*row))
    rows: list[dict[str, Any]] = []
    last = _month(moment)
    for code, orders in sorted(by_principal.items()):
        current = month or _month(orders[0].ordered_at)
        while current <= (month or last):
            row = _row(current, code, orders, moment)
            if row["ordered"] or row["delivered"] or row["open"]:
                rows.append(row)
            current = _next(current)
    rows.sort(key=lambda r: (r["month"], r["principal"]))
    return rows


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The report as RFC 4180 CSV with a header; None is an empty field."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    return out.getvalue()


ORDER_STATES = ("all", "open", "delivered")


def list_orders(conn: Conn, *, principal: str | None, state: str = "all",
                limit: int = 500) -> list[dict[str, Any]]:
    """Orders, oldest first, with the delivering device and the lead time in working days.

    The patient is not shown: the order keeps only the patient's pseudonym, and a list of
    orders is a work queue for the devices centre, not a read of patient data.
    """
    if state not in ORDER_STATES:
        raise InvalidInputError(f"order state {state!r} is not one of {', '.join(ORDER_STATES)}")
    if not 1 <= limit <= 5000:
        raise InvalidInputError(f"limit {limit} is outside 1..5000")
    clauses = {"open": ["assignment_id IS NULL"],
               "delivered": ["assignment_id IS NOT NULL"]}.get(state, [])
    if principal is not None:
        clauses.append("principal_code = %(principal)s")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(
        "SELECT principal_code, order_id, unit, model, article_number, ordered_at, device_id,"
        f" fulfilled_at FROM orders {where}"
        " ORDER BY ordered_at, principal_code, order_id LIMIT %(limit)s",
        {"principal": principal, "limit": limit}).fetchall()
    return [{
        "principal": p, "order_id": order_id, "unit": unit, "model": model,
        "article_number": article, "ordered_at": ordered_at.isoformat(),
        "device_id": device, "delivered_at": None if done is None else done.isoformat(),
        "lead_time_days": None if done is None else lead_time(ordered_at, done),
    } for p, order_id, unit, model, article, ordered_at, device, done in rows]
