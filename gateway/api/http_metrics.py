"""Request counts and durations of the API, labelled by route template.

A pure ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: it only watches the
``send`` calls go by, so streamed responses (server-sent events) pass through unbuffered.
The route label is the matched route's template (``/fhir/r4/Device/{device_id}``), never
the path as sent: a patient reference or device id in a path must not become a label, and
a client probing random paths must not grow the number of series.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.fleet_metrics import FleetMetrics

UNMATCHED = "unmatched"
# Methods outside this set are counted as "other", for the same reason as UNMATCHED.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "aidlink_http_requests",
    "API requests answered, by method, route template (or 'unmatched') and status code",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "aidlink_http_request_duration_seconds",
    "From the request's arrival to the end of its response (for a stream, its whole life),"
    " by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


class HttpMetrics:
    """ASGI middleware counting and timing every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app``."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; count it when the app returns or raises."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # 500 unless a response starts: an exception that escapes becomes one further out.
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = route_label(scope)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)


def route_label(scope: Scope) -> str:
    """The template of the route the router matched (it leaves it in the scope), else
    UNMATCHED: no route, or a middleware answered before routing (an oversized body)."""
    route = scope.get("route")
    if isinstance(route, BaseRoute):
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path
    return UNMATCHED


def instrument(app: FastAPI, *, database_url: str) -> Callable[[], bytes]:
    """Count the app's requests (outermost, so rejections by other middleware count too)
    and read the fleet gauges of ``database_url``; returns what ``/metrics`` serves."""
    app.add_middleware(HttpMetrics)
    return FleetMetrics(database_url=database_url).exposition
