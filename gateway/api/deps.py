"""Dependencies: the one place that decides who the caller is and what it may read."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Header, HTTPException, Request
from psycopg_pool import ConnectionPool

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


def patient_reader(who: CallerDep) -> Caller:
    """A caller allowed to read patient data (clinicians' systems and admins)."""
    if who.role not in (Role.CLINICIAN, Role.ADMIN):
        raise HTTPException(403, f"role {who.role} may not read patient data")
    return who


PatientReader = Annotated[Caller, Depends(patient_reader)]


def connection(state: State) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection; the request's reads and its access-log entries share one
    transaction, committed when the route returns without error."""
    with state.pool.connection() as conn:
        yield conn


Conn = Annotated[psycopg.Connection[Any], Depends(connection)]
