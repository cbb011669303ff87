"""Security policies (``/policy``) and fleet and cost reports (``/reports``), included under
``/v1`` by ``gateway.api.provisioning``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response

from gateway.api.deps import Conn
from gateway.api.provisioning_common import (
    AdminDep,
    OperatorDep,
    PrincipalQuery,
    json_response,
    mapped_errors,
    report_response,
)
from gateway.api.provisioning_models import PolicyVersion
from provisioning import policy, reports
from provisioning.service import Conn as Connection

router = APIRouter()

Format = Annotated[Literal["json", "csv"], Query(alias="format")]


@router.get("/policy")
def get_policy(op: OperatorDep, conn: Conn, principal: PrincipalQuery) -> Response:
    """The current policy of the caller's principal (an admin may name another)."""
    code = principal or op.caller.principal
    with mapped_errors(), conn.transaction():
        rules = policy.current_policy(conn, code)
    return json_response({"principal": code, "version": rules.version,
                          "policy": rules.document()})


@router.get("/policy/history")
def get_policy_history(op: OperatorDep, conn: Conn, principal: PrincipalQuery) -> Response:
    """Every stored version of the caller's principal's policy, oldest first (an admin may
    name another)."""
    code = principal or op.caller.principal
    with mapped_errors(), conn.transaction():
        rows = policy.policy_history(conn, code)
    return json_response({"principal": code, "items": rows})


@router.put("/policy", response_model=PolicyVersion)
def put_policy(op: AdminDep, conn: Conn, principal: PrincipalQuery,
               document: Annotated[dict[str, Any], Body()]) -> PolicyVersion:
    """Store a new policy version (an unchanged document keeps the current version)."""
    code = principal or op.caller.principal
    # parse_policy (inside set_policy) names every wrong field, as the CLI reports them.
    with mapped_errors(), conn.transaction():
        version = policy.set_policy(conn, code, document, op.actor)
    return PolicyVersion(principal=code, version=version)


@router.get("/policy/check")
def check_policy(conn: Conn, principal: PrincipalQuery) -> Response:
    """Devices in use that break their principal's current policy, and why."""
    with mapped_errors(), conn.transaction():
        findings = policy.fleet_check(conn, principal)
    return json_response({"items": findings})


def _run(conn: Conn, name: str, fmt: str,
         rows: Callable[[Connection], list[dict[str, Any]]]) -> Response:
    with mapped_errors(), conn.transaction():
        found = rows(conn)
    return report_response(name, found, fmt)


@router.get("/reports/costs")
def costs(conn: Conn, principal: PrincipalQuery,
          month: Annotated[str, Query(pattern=r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])$")],
          fmt: Format = "json") -> Response:
    """What each principal and unit owes for a month (YYYY-MM)."""
    first = date.fromisoformat(f"{month}-01")
    return _run(conn, "costs", fmt, lambda c: reports.monthly_costs(
        c, month=first, principal=principal))


@router.get("/reports/expiring")
def expiring(conn: Conn, principal: PrincipalQuery,
             days: Annotated[int, Query(ge=0, le=3650)], fmt: Format = "json") -> Response:
    """Licences ending within ``days``."""
    return _run(conn, "expiring", fmt, lambda c: reports.expiring_licences(
        c, within_days=days, principal=principal))


@router.get("/reports/unlicensed")
def unlicensed(conn: Conn, principal: PrincipalQuery, fmt: Format = "json") -> Response:
    """Devices at patients without a licence today."""
    return _run(conn, "unlicensed", fmt, lambda c: reports.unlicensed_devices(
        c, principal=principal))


@router.get("/reports/idle")
def idle(conn: Conn, principal: PrincipalQuery,
         days: Annotated[int, Query(ge=1, le=3650)], fmt: Format = "json") -> Response:
    """Licences held by devices in stock or without readings for ``days``."""
    return _run(conn, "idle", fmt, lambda c: reports.idle_licences(
        c, idle_days=days, principal=principal))


@router.get("/reports/deliveries")
def delivered(conn: Conn, principal: PrincipalQuery, since: date, until: date,
              fmt: Format = "json") -> Response:
    """Devices delivered per month, principal and product class (``until`` excluded)."""
    return _run(conn, "deliveries", fmt, lambda c: reports.deliveries(
        c, since=since, until=until, principal=principal))


@router.get("/reports/overdue")
def overdue(conn: Conn, principal: PrincipalQuery, fmt: Format = "json") -> Response:
    """Devices still with a patient after their assignment's planned end (no patient
    reference), longest overdue first."""
    return _run(conn, "overdue", fmt, lambda c: reports.overdue_assignments(
        c, principal=principal))
