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
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import ConnectionPool

from adapters.model import dumps
from gateway.api import fhir
from gateway.api.deps import ApiState, Conn, PatientReader
from gateway.api.observations import router as observations_router
from gateway.api.provisioning import router as provisioning_router

HealthProvider = Callable[[], dict[str, Any]]


def create_app(*, database_url: str, secret: bytes,
               gateway_health: HealthProvider | None = None,
               ca_passphrase: bytes | None = None, broker_dir: Path | None = None) -> FastAPI:
    """The API over one database; ``gateway_health`` adds the in-process gateway's state;
    ``ca_passphrase`` lets the provisioning routes issue and revoke certificates."""
    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        database_url, min_size=1, max_size=8, open=False, name="aidlink-api",
        kwargs={"connect_timeout": 5},
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=False)
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(title="aidlink", version="0.1.0", lifespan=lifespan)
    app.state.aidlink = ApiState(pool=pool, secret=secret)
    app.state.aidlink_ca_passphrase = ca_passphrase
    # Where `aidlink broker-config` wrote the broker's files: credential changes refresh them.
    app.state.aidlink_broker_dir = broker_dir
    app.include_router(observations_router)
    app.include_router(provisioning_router)
    _errors(app)

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
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/fhir/r4/metadata")
    def metadata() -> Response:
        """The CapabilityStatement: what this server really supports."""
        return Response(dumps(_capability()), media_type=fhir.FHIR_JSON)

    @app.get("/fhir/r4/Device/{device_id}")
    def device(device_id: str, who: PatientReader, conn: Conn) -> Response:
        """One device of the caller's principal."""
        row = conn.execute(
            "SELECT id, model, serial FROM devices WHERE id = %s AND principal_code = %s",
            (device_id, who.principal),
        ).fetchone()
        if row is None:
            raise HTTPException(404, f"Device/{device_id} not found")
        resource = {"resourceType": "Device", "id": row[0],
                    "serialNumber": row[2], "modelNumber": row[1],
                    "owner": {"identifier": {"value": who.principal}}}
        return Response(dumps(resource), media_type=fhir.FHIR_JSON)

    return app


def _capability() -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "resource": [
                {"type": "Observation", "interaction": [{"code": "search-type"}],
                 "searchParam": [
                     {"name": "subject", "type": "reference"},
                     {"name": "code", "type": "token"},
                     {"name": "date", "type": "date"},
                     {"name": "_count", "type": "number"},
                 ]},
                {"type": "Device", "interaction": [{"code": "read"}]},
            ],
        }],
    }


def _is_fhir(request: Request) -> bool:
    return request.url.path.startswith("/fhir/")


def _errors(app: FastAPI) -> None:
    codes = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 422: "invalid"}

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
