"""The FastAPI application, built by a factory from explicit dependencies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from psycopg_pool import ConnectionPool

from adapters.model import dumps
from gateway import heap
from gateway.api import fhir
from gateway.api.audit import router as audit_router
from gateway.api.console import router as console_router
from gateway.api.deps import ApiState
from gateway.api.events import router as events_router
from gateway.api.fhir_routes import router as fhir_router
from gateway.api.http_metrics import instrument
from gateway.api.limits import DEFAULT_BODY_LIMIT, DEFAULT_RATE, BodySizeLimit, RateLimiter
from gateway.api.oauth import router as oauth_router
from gateway.api.observations import router as observations_router
from gateway.api.provisioning import router as provisioning_router
from gateway.api.provisioning_orders import router as orders_router
from gateway.api.provisioning_pilots import router as pilots_router
from gateway.api.verified_tokens import VerifiedTokens
from gateway.auth import MAX_TOKEN_TTL_SECONDS
from gateway.settings import Settings
from gateway.token_keys import KeyRing

HealthProvider = Callable[[], dict[str, Any]]
# The settings' default token lifetime (AIDLINK_TOKEN_TTL_SECONDS), one source for both.
_TOKEN_TTL_SECONDS: int = Settings.model_fields["token_ttl_seconds"].default


# Names of UTC itself. PostgreSQL's usual default is 'Etc/UTC', and psycopg loads a timestamptz
# of any zone named otherwise than 'UTC' through zoneinfo, a fifth of a long FHIR page's time
# (gateway/api/readings.py switches other zones to UTC for its reads).
_UTC_NAMES = frozenset({"Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu",
                        "Zulu"})


def _utc_by_its_name(conn: psycopg.Connection[Any]) -> None:
    """Call a session in UTC by the name 'UTC': the same zone, whatever a query computes."""
    if conn.info.parameter_status("TimeZone") in _UTC_NAMES:
        conn.execute("SET TIME ZONE 'UTC'")
        conn.commit()


def create_app(*, database_url: str, secret: bytes,
               gateway_health: HealthProvider | None = None,
               ca_passphrase: bytes | None = None, broker_dir: Path | None = None,
               token_ttl_seconds: int = _TOKEN_TTL_SECONDS,
               rate_limit: tuple[float, int] | None = DEFAULT_RATE,
               body_limit: int = DEFAULT_BODY_LIMIT) -> FastAPI:
    """The API over one database; ``gateway_health`` adds the in-process gateway's state;
    ``ca_passphrase`` lets the provisioning routes issue and revoke certificates;
    ``token_ttl_seconds`` is the lifetime of tokens from ``/oauth/token``; ``rate_limit`` is
    each client's (requests per second, burst), None for none; ``body_limit`` caps request
    bodies in bytes (bulk CSV uploads have a larger limit of their own)."""
    if not 60 <= token_ttl_seconds <= MAX_TOKEN_TTL_SECONDS:
        raise ValueError(f"token_ttl_seconds {token_ttl_seconds} is outside 60.."
                         f"{MAX_TOKEN_TTL_SECONDS}")
    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        database_url, min_size=1, max_size=8, open=False, name="aidlink-api",
        kwargs={"connect_timeout": 5}, configure=_utc_by_its_name,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=False)
        # A long FHIR page makes some 20,000 dicts, and the full collections they set off
        # walked the whole app: up to 68 ms each, once every dozen 30-day pages.
        heap.settle()
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(title="aidlink", version="0.1.0", lifespan=lifespan)
    limiter = RateLimiter(*rate_limit) if rate_limit is not None else None
    # The key ring connects on its own (rarely: a token issued, a reload a minute), so a
    # request holding a pooled connection never waits on the pool for a second one.
    keys = KeyRing(lambda: psycopg.connect(database_url, connect_timeout=5), secret)
    app.state.aidlink = ApiState(pool=pool, secret=secret, keys=keys, limiter=limiter,
                                 token_ttl_seconds=token_ttl_seconds,
                                 verified=VerifiedTokens())
    app.state.aidlink_ca_passphrase = ca_passphrase
    # Where `aidlink broker-config` wrote the broker's files: credential changes refresh them.
    app.state.aidlink_broker_dir = broker_dir
    app.include_router(observations_router)
    app.include_router(fhir_router)
    app.include_router(events_router)
    app.include_router(provisioning_router)
    app.include_router(pilots_router)
    app.include_router(orders_router)
    app.include_router(oauth_router)
    app.add_middleware(BodySizeLimit, default=body_limit)
    app.include_router(audit_router)
    app.include_router(console_router)
    _errors(app)
    exposition = instrument(app, database_url=database_url)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """Whether the API can reach its database and, in-process, whether ingestion works."""
        reasons: list[str] = []
        try:
            with pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            reasons.append(f"database unavailable: {type(exc).__name__}")
        body: dict[str, Any] = {}
        if gateway_health is not None:
            body["gateway"] = gateway_health()
            reasons.extend(body["gateway"]["reasons"])
        body["status"] = "ok" if not reasons else "degraded"
        body["reasons"] = reasons
        return JSONResponse(body, status_code=200 if not reasons else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus exposition."""
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


def _is_fhir(request: Request) -> bool:
    return request.url.path.startswith("/fhir/")


def _errors(app: FastAPI) -> None:
    codes = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 413: "too-costly",
             422: "invalid", 429: "throttled", 503: "transient"}

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if _is_fhir(request):
            outcome = fhir.operation_outcome(codes.get(exc.status_code, "exception"),
                                             str(exc.detail))
            return Response(dumps(outcome), status_code=exc.status_code,
                            media_type=fhir.FHIR_JSON, headers=exc.headers)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        if _is_fhir(request):
            return Response(dumps(fhir.operation_outcome("invalid", problems)),
                            status_code=400, media_type=fhir.FHIR_JSON)
        return JSONResponse({"detail": problems}, status_code=422)
