"""Licences of the caller's principal: each licence, those about to end, and what a month
costs, from the same service functions as ``/v1/licences`` and ``/v1/reports``."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from gateway.api.console.render import ConsoleRoute, page
from gateway.api.console.session import ConsoleCaller
from gateway.api.deps import Conn
from gateway.api.provisioning_common import mapped_errors, operator
from provisioning import licences, reports

router = APIRouter(route_class=ConsoleRoute)

EXPIRING_DAYS = 90
MONTH = r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])$"


@router.get("/licences", response_class=HTMLResponse)
def licence_page(request: Request, who: ConsoleCaller, conn: Conn,
                 month: Annotated[str | None, Query(pattern=MONTH)] = None) -> HTMLResponse:
    """Licences with their expiries, and the month's costs (default: this month)."""
    operator(who)
    chosen = month or datetime.now(reports.CENTRE_ZONE).strftime("%Y-%m")
    with mapped_errors(), conn.transaction():
        held = licences.list_licences(conn, principal=who.principal)
        ending = reports.expiring_licences(conn, within_days=EXPIRING_DAYS,
                                           principal=who.principal)
        costs = reports.monthly_costs(conn, month=date.fromisoformat(f"{chosen}-01"),
                                      principal=who.principal)
    return page(request, "licences.html", who=who, licences=held, expiring=ending,
                costs=costs, month=chosen, days=EXPIRING_DAYS, values={"month": chosen})
