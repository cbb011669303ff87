"""The fleet overview: the principal's devices with connection, battery, firmware compliance
and last reading, filtered by the technician.

The device rows are read on the caller's row-level-security connection; compliance comes
from ``provisioning.policy.fleet_check``, the same check as ``GET /v1/policy/check``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from psycopg.rows import dict_row

from gateway.api.console.render import ConsoleRoute, page
from gateway.api.console.session import DevicesReader, ScopedConn
from gateway.api.deps import Conn
from provisioning import policy
from provisioning.service import Conn as Connection

router = APIRouter(route_class=ConsoleRoute)

SHOWN = 200
# More rows than shown are read, since the compliance filter runs after the query.
READ = 2000
STATES = ("in_stock", "assigned", "returned", "reconditioning", "retired")
CONNECTIONS = ("online", "offline", "never")
COMPLIANCE = ("ok", "not")

# The newest battery level and the newest reading, per device, from indexed lookups.
_FLEET = (
    "SELECT d.id, d.model, d.serial, d.state, d.firmware_version, s.online, s.last_seen,"
    " (SELECT (e.data->>'level')::int FROM events e WHERE e.device_id = d.id"
    "   AND e.type = 'device.battery' ORDER BY e.occurred_at DESC LIMIT 1) AS battery,"
    " (SELECT max(o.ts) FROM observations o WHERE o.device_id = d.id) AS last_reading"
    " FROM devices d LEFT JOIN device_state s ON s.device_id = d.id"
    " WHERE d.principal_code = %(principal)s"
    " AND (%(state)s::text IS NULL OR d.state = %(state)s)"
    " AND (%(q)s::text IS NULL OR d.id ILIKE %(q)s OR d.model ILIKE %(q)s"
    "      OR d.serial ILIKE %(q)s)"
    " AND (%(connection)s::text IS NULL"
    "      OR (%(connection)s = 'online' AND s.online)"
    "      OR (%(connection)s = 'offline' AND NOT s.online)"
    "      OR (%(connection)s = 'never' AND s.device_id IS NULL))"
    " ORDER BY d.id LIMIT %(limit)s"
)


def _like(text: str) -> str:
    """A search text as an ILIKE pattern that matches it literally anywhere."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def fleet_rows(scoped: Connection, principal: str, *, q: str | None, state: str | None,
               connection: str | None) -> list[dict[str, Any]]:
    """The principal's devices matching the filters, by id."""
    params = {"principal": principal, "state": state, "connection": connection,
              "q": _like(q) if q else None, "limit": READ}
    with scoped.cursor(row_factory=dict_row) as cur:
        cur.execute(_FLEET, params)
        return cur.fetchall()


def _choice(value: str | None, allowed: tuple[str, ...]) -> str | None:
    # An unknown filter value is ignored rather than refused: it can only come from an
    # edited URL, and an unfiltered list is the honest answer to it.
    return value if value in allowed else None


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, who: DevicesReader, scoped: ScopedConn, conn: Conn,
             q: Annotated[str | None, Query(max_length=64)] = None,
             state: Annotated[str | None, Query(max_length=20)] = None,
             connection: Annotated[str | None, Query(max_length=20)] = None,
             compliance: Annotated[str | None, Query(max_length=20)] = None) -> HTMLResponse:
    """The fleet of the caller's principal."""
    chosen = {"q": (q or "").strip() or None, "state": _choice(state, STATES),
              "connection": _choice(connection, CONNECTIONS),
              "compliance": _choice(compliance, COMPLIANCE)}
    rows = fleet_rows(scoped, who.principal, q=chosen["q"], state=chosen["state"],
                      connection=chosen["connection"])
    with conn.transaction():
        findings = {f["device_id"]: f["reasons"]
                    for f in policy.fleet_check(conn, who.principal)}
    for row in rows:
        row["reasons"] = findings.get(row["id"], [])
    if chosen["compliance"] == "ok":
        rows = [row for row in rows if not row["reasons"]]
    elif chosen["compliance"] == "not":
        rows = [row for row in rows if row["reasons"]]
    return page(request, "fleet.html", who=who, rows=rows[:SHOWN], total=len(rows),
                limited=len(rows) > SHOWN, shown=SHOWN, chosen=chosen, states=STATES,
                values={key: value or "" for key, value in chosen.items()})
