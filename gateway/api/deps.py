"""Dependencies: the one place that decides who the caller is and what it may read."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Header, HTTPException, Request
from psycopg_pool import ConnectionPool

from gateway.api import scoping
from gateway.auth import Caller, Role, TokenError, verify_token


@dataclass(frozen=True, slots=True)
class ApiState:
    """What the routes share: the pool and the server secret."""

    pool: ConnectionPool[psycopg.Connection[Any]]
    secret: bytes


def api_state(request: Request) -> ApiState:
    """The application's shared state."""
    state: ApiState = request.app.state.aidlink
    return state


State = Annotated[ApiState, Depends(api_state)]


def caller(state: State, authorization: Annotated[str | None, Header()] = None) -> Caller:
    """The caller, from its bearer token; 401 naming what is wrong otherwise."""
    if authorization is None:
        raise HTTPException(401, "missing Authorization header (Bearer token)",
                            headers={"WWW-Authenticate": "Bearer"})
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "Authorization must be 'Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    try:
        return verify_token(state.secret, token.strip())
    except TokenError as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc


CallerDep = Annotated[Caller, Depends(caller)]


def _allowed(who: Caller, roles: tuple[Role, ...], what: str) -> Caller:
    if who.role not in roles:
        raise HTTPException(403, f"role {who.role} may not {what}")
    return who


def patient_reader(who: CallerDep) -> Caller:
    """A caller allowed to read patient data (clinicians' systems and admins)."""
    return _allowed(who, (Role.CLINICIAN, Role.ADMIN), "read patient data")


def events_reader(who: CallerDep) -> Caller:
    """A caller allowed to read events (alarms, dispensers, device online/offline)."""
    return _allowed(who, (Role.CLINICIAN, Role.ADMIN), "read events")


def devices_reader(who: CallerDep) -> Caller:
    """A caller allowed to read the principal's devices."""
    return _allowed(who, (Role.CLINICIAN, Role.TECHNICIAN, Role.ADMIN), "read devices")


def auditor(who: CallerDep) -> Caller:
    """A caller allowed to read the principal's access log."""
    return _allowed(who, (Role.AUDITOR, Role.ADMIN), "read the access log")


PatientReader = Annotated[Caller, Depends(patient_reader)]
EventsReader = Annotated[Caller, Depends(events_reader)]
DevicesReader = Annotated[Caller, Depends(devices_reader)]
Auditor = Annotated[Caller, Depends(auditor)]


def connection(state: State) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection; the request's reads and its access-log entries share one
    transaction, committed when the route returns without error."""
    with state.pool.connection() as conn:
        yield conn


Conn = Annotated[psycopg.Connection[Any], Depends(connection)]


def scoped_connection(state: State, who: CallerDep) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection whose transaction runs as the application role, limited by
    row-level security to the caller's principal (the second wall behind the queries)."""
    with state.pool.connection() as conn:
        scoping.enter(conn, who.principal, scoping.API_ROLE)
        yield conn


def audit_connection(state: State, who: CallerDep) -> Iterator[psycopg.Connection[Any]]:
    """Like ``scoped_connection``, as the auditors' role: it alone reads the access log."""
    with state.pool.connection() as conn:
        scoping.enter(conn, who.principal, scoping.AUDIT_ROLE)
        yield conn


ScopedConn = Annotated[psycopg.Connection[Any], Depends(scoped_connection)]
AuditConn = Annotated[psycopg.Connection[Any], Depends(audit_connection)]
