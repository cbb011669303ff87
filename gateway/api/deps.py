"""Dependencies: the one place that decides who the caller is and what it may read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Header, HTTPException, Request
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool

from gateway.api import scoping
from gateway.api.limits import RateLimiter
from gateway.api.verified_tokens import VerifiedTokens
from gateway.auth import Caller, Role, Scope, TokenError, VerificationKeys, verify_token_until
from gateway.token_keys import KeyRing, KeyRingError, NotCached


@dataclass(frozen=True, slots=True)
class ApiState:
    """What the routes share: the pool, the server secret, the token key ring, the per-client
    rate limiter (None: unlimited), the lifetime of the tokens ``/oauth/token`` issues and
    the tokens already verified."""

    pool: ConnectionPool[psycopg.Connection[Any]]
    secret: bytes
    keys: KeyRing
    limiter: RateLimiter | None
    token_ttl_seconds: int
    verified: VerifiedTokens


# ``async``, as it neither blocks nor waits: FastAPI runs every plain ``def`` dependency on a
# worker thread, a hop for each of them on every request. (The role checks stay plain
# functions: the console calls them directly.)
async def api_state(request: Request) -> ApiState:
    """The application's shared state."""
    state: ApiState = request.app.state.aidlink
    return state


State = Annotated[ApiState, Depends(api_state)]


async def caller(state: State, authorization: Annotated[str | None, Header()] = None) -> Caller:
    """The caller, from its bearer token; 401 naming what is wrong otherwise, 429 when the
    client has spent its rate limit (counted only once the token is verified, so nobody can
    spend another client's requests)."""
    try:
        # On the event loop while the signing keys are cached: checking a signature takes a
        # fraction of a millisecond, and a hop to a worker thread and back as much again.
        return _checked(state, authorization, state.keys.cached)
    except NotCached:
        return await run_in_threadpool(authenticate, state, authorization)


def authenticate(state: ApiState, authorization: str | None) -> Caller:
    """``caller`` for code that is not a dependency; it may read the keys from the
    database, so it belongs on a worker thread."""
    return _checked(state, authorization, state.keys)


def _checked(state: ApiState, authorization: str | None, keys: VerificationKeys) -> Caller:
    if authorization is None:
        raise HTTPException(401, "missing Authorization header (Bearer token)",
                            headers={"WWW-Authenticate": "Bearer"})
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "Authorization must be 'Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    token = token.strip()
    # Read before the check: a reload during it makes the entry stale, never the reverse.
    generation = state.keys.generation
    who = state.verified.get(token, generation)
    if who is None:
        try:
            who, expires = verify_token_until(keys, token)
        except TokenError as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
        except KeyRingError as exc:
            raise HTTPException(503, f"tokens cannot be checked: {exc}") from exc
        state.verified.put(token, who, expires, generation)
    rate_limit(state.limiter, who)
    return who


def rate_limit(limiter: RateLimiter | None, who: Caller) -> None:
    """429 with Retry-After when ``who``'s client is over its limit."""
    if limiter is None:
        return
    # A client id is unique, but command-line tokens share theirs across principals.
    wait = limiter.take(f"{who.principal}/{who.subject}")
    if wait is not None:
        raise HTTPException(
            429, f"client {who.subject} of principal {who.principal} is over its rate limit"
                 f" of {limiter.describe()}; retry after {wait} s",
            headers={"Retry-After": str(wait)})


CallerDep = Annotated[Caller, Depends(caller)]


def allowed(who: Caller, roles: tuple[Role, ...], scope: Scope, what: str) -> Caller:
    """``who`` if its role is one of ``roles`` and its token has ``scope``; 403 naming which
    is missing otherwise."""
    if who.role not in roles:
        raise HTTPException(403, f"role {who.role} may not {what}")
    if scope not in who.scopes:
        granted = ", ".join(sorted(who.scopes)) or "none"
        raise HTTPException(403, f"token of client {who.subject} lacks scope {scope}, needed"
                                 f" to {what} (its scopes: {granted})")
    return who


def patient_reader(who: CallerDep) -> Caller:
    """A caller allowed to read patient data (clinicians' systems and admins)."""
    return allowed(who, (Role.CLINICIAN, Role.ADMIN), Scope.OBSERVATIONS, "read patient data")


def events_reader(who: CallerDep) -> Caller:
    """A caller allowed to read events (alarms, dispensers, device online/offline)."""
    return allowed(who, (Role.CLINICIAN, Role.ADMIN), Scope.EVENTS, "read events")


def devices_reader(who: CallerDep) -> Caller:
    """A caller allowed to read the principal's devices."""
    return allowed(who, (Role.CLINICIAN, Role.TECHNICIAN, Role.ADMIN), Scope.DEVICES,
                   "read devices")


def auditor(who: CallerDep) -> Caller:
    """A caller allowed to read the principal's access log."""
    return allowed(who, (Role.AUDITOR, Role.ADMIN), Scope.AUDIT, "read the access log")


def _on_the_loop(check: Callable[[Caller], Caller]) -> Callable[[Caller], Awaitable[Caller]]:
    """A role check as an ``async`` dependency: it neither blocks nor waits, and as a plain
    function FastAPI would hand it to a worker thread and back on every request."""

    async def dependency(who: CallerDep) -> Caller:
        return check(who)

    dependency.__doc__ = check.__doc__
    return dependency


PatientReader = Annotated[Caller, Depends(_on_the_loop(patient_reader))]
EventsReader = Annotated[Caller, Depends(_on_the_loop(events_reader))]
DevicesReader = Annotated[Caller, Depends(_on_the_loop(devices_reader))]
Auditor = Annotated[Caller, Depends(auditor)]


def commit_before_answer(conn: psycopg.Connection[Any]) -> None:
    """Commit the request's work; 503 when the database refuses. The answer goes out only
    after this: no data is shown whose access-log entry was not kept, and no change reported
    done that was not."""
    try:
        conn.commit()
    except psycopg.Error as exc:
        raise HTTPException(503, f"the database did not commit this request's work"
                                 f" ({type(exc).__name__}); none of it was kept") from exc


def connection(state: State) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection; the request's reads and its access-log entries share one
    transaction, committed when the route returns without error."""
    with state.pool.connection() as conn:
        yield conn
        commit_before_answer(conn)


# Scope "function": FastAPI runs the code after ``yield`` before the response is sent, not
# after it (its default, "request"), so the commit comes before the answer.
Conn = Annotated[psycopg.Connection[Any], Depends(connection, scope="function")]


@contextmanager
def scoped(state: ApiState, principal: str, role: str = scoping.API_ROLE, *,
           pipelined: bool = False) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection whose transaction runs as ``role``, limited by row-level security
    to ``principal`` (the second wall behind the queries), committed before the answer.

    ``pipelined`` puts the connection in libpq's pipeline mode: a statement whose result is
    not read goes with the next one that is, so BEGIN, the scoping and the first query make
    one round trip, and the access-log entries and COMMIT another. An error in a statement
    sent that way surfaces with the next result read, or as a commit that failed.
    """
    with state.pool.connection() as conn, conn.pipeline() if pipelined else nullcontext():
        scoping.enter(conn, principal, role)
        yield conn
        commit_before_answer(conn)


def scoped_connection(state: State, who: CallerDep) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection scoped to the caller's principal as the application role."""
    with scoped(state, who.principal) as conn:
        yield conn


def audit_connection(state: State, who: CallerDep) -> Iterator[psycopg.Connection[Any]]:
    """Like ``scoped_connection``, as the auditors' role: it alone reads the access log."""
    with scoped(state, who.principal, scoping.AUDIT_ROLE) as conn:
        yield conn


ScopedConn = Annotated[psycopg.Connection[Any], Depends(scoped_connection, scope="function")]
AuditConn = Annotated[psycopg.Connection[Any], Depends(audit_connection, scope="function")]
