"""Principals join the shared devices centre gradually: from a date, or not (yet).

A principal registered as not participating has no policy, CA or API clients; ``join`` sets
them up. Devices are onboarded, and the gateway accepts data, only for a principal that
participates at that moment.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from provisioning import ca
from provisioning.errors import ConflictError, NotFoundError
from provisioning.policy import Policy, PolicyError, set_policy

Conn = psycopg.Connection[Any]
# Dates are days of the devices centre's calendar (as in provisioning/reports.py).
CENTRE_ZONE = ZoneInfo("Europe/Stockholm")
RULE = "participation rule"
COLUMNS = ("principal", "name", "participating", "participates_from", "joined_at", "joined_by",
           "devices")


class ParticipationError(PolicyError):
    """A request for a principal that does not participate (yet); the message names the rule."""


def csv_of(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> str:
    """Rows as RFC 4180 CSV with a header, None as an empty field (as provisioning.reports)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in columns])
    return out.getvalue()


def start_of(day: date) -> datetime:
    """Midnight at the start of ``day`` in the centre's zone."""
    return datetime.combine(day, time(0), CENTRE_ZONE)


def refusal(code: str, participates_from: datetime | None, now: datetime,
            what: str = "onboarding") -> str | None:
    """Why ``what`` is refused for a principal at ``now``; None while it participates."""
    if participates_from is None:
        return (f"principal {code} does not participate (not joined); {what} is refused"
                f" ({RULE}: aidlink principal join {code})")
    if now < participates_from:
        day = participates_from.astimezone(CENTRE_ZONE).date().isoformat()
        return f"principal {code} participates from {day}; {what} is refused before then ({RULE})"
    return None


def require_participating(conn: Conn, code: str, what: str = "onboarding",
                          now: datetime | None = None) -> None:
    """ParticipationError naming the rule unless the principal participates now."""
    row = conn.execute("SELECT participates_from FROM principals WHERE code = %s",
                       (code,)).fetchone()
    if row is None:
        raise NotFoundError(f"principal {code} does not exist")
    reason = refusal(code, row[0], now or datetime.now(UTC), what)
    if reason is not None:
        raise ParticipationError(reason)


def require_joined(conn: Conn, code: str, what: str) -> None:
    """ParticipationError naming the rule when the principal has not joined at all (a date
    still to come is fine: what it needs is set up when it joins)."""
    row = conn.execute("SELECT participates_from FROM principals WHERE code = %s",
                       (code,)).fetchone()
    if row is not None and row[0] is None:
        raise ParticipationError(refusal(code, None, datetime.now(UTC), what) or "")


def join(conn: Conn, passphrase: bytes | None, code: str, *, actor: str,
         start: date | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Make a principal registered as not participating take part from ``start`` (default now).

    Its first policy version (the default rules with its device auth) is stored and its
    intermediate CA made now; without a passphrase the CA is made when first needed.
    """
    moment = now or datetime.now(UTC)
    begins = moment if start is None else start_of(start)
    with conn.transaction():
        row = conn.execute(
            "SELECT participates_from, device_auth FROM principals WHERE code = %s FOR UPDATE",
            (code,)).fetchone()
        if row is None:
            raise NotFoundError(f"principal {code} does not exist")
        if row[0] is not None:
            day = row[0].astimezone(CENTRE_ZONE).date().isoformat()
            raise ConflictError(f"principal {code} has joined already; it participates"
                                f" from {day}")
        conn.execute("UPDATE principals SET participates_from = %s, joined_at = %s,"
                     " joined_by = %s WHERE code = %s", (begins, moment, actor, code))
        version = set_policy(conn, code, Policy(device_auth=row[1]), actor)
        if passphrase is not None:
            ca.authority(conn, passphrase, code, moment)
    return {"principal": code, "participates_from": begins, "joined_at": moment,
            "joined_by": actor, "policy_version": version,
            "intermediate_ca": passphrase is not None}


def report(conn: Conn, *, principal: str | None = None,
           now: datetime | None = None) -> list[dict[str, Any]]:
    """Who participates since when (and who does not yet), with their devices in service."""
    moment = now or datetime.now(UTC)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT p.code AS principal, p.name, p.participates_from, p.joined_at, p.joined_by,"
            " (SELECT count(*) FROM devices d WHERE d.principal_code = p.code"
            "   AND d.state <> 'retired') AS devices"
            " FROM principals p WHERE %s::text IS NULL OR p.code = %s ORDER BY p.code",
            (principal, principal))
        rows = cur.fetchall()
    out = []
    for row in rows:
        begins = row["participates_from"]
        out.append({
            "principal": row["principal"], "name": row["name"],
            "participating": begins is not None and begins <= moment,
            "participates_from": None if begins is None else begins.astimezone(UTC).isoformat(),
            "joined_at": None if row["joined_at"] is None
            else row["joined_at"].astimezone(UTC).isoformat(),
            "joined_by": row["joined_by"], "devices": int(row["devices"]),
        })
    return out
