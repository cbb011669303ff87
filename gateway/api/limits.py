"""Per-client rate limits (token buckets) and request body size limits (ASGI middleware)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.model import dumps
from gateway.api import fhir

MIB = 1024 * 1024
DEFAULT_RATE = (20.0, 100)  # requests per second, burst
DEFAULT_BODY_LIMIT = 1 * MIB
# Bulk onboarding takes a CSV of up to 10,000 devices; the Sesam traceability import is CSV too.
BODY_LIMITS = {"/v1/devices/bulk": 16 * MIB, "/v1/devices/traceability.csv": 16 * MIB}
# Buckets kept before idle ones are dropped (a full bucket holds nothing worth keeping).
_MAX_BUCKETS = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per client: ``rate`` requests per second on average, ``burst`` at once.

    In-process: with several API processes each enforces its own buckets.
    """

    def __init__(self, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate limit needs rate > 0 and burst >= 1, not {rate}/{burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, client: str) -> int | None:
        """Spend one request of ``client``; None if allowed, else seconds until it would be."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(client)
            if bucket is None:
                if len(self._buckets) >= _MAX_BUCKETS:
                    self._forget_full(now)
                bucket = self._buckets[client] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return max(1, math.ceil((1.0 - bucket.tokens) / self.rate))

    def describe(self) -> str:
        """The limit in words, for error messages."""
        return f"{self.rate:g} requests/s with bursts of {self.burst}"

    def _forget_full(self, now: float) -> None:
        self._buckets = {
            client: b for client, b in self._buckets.items()
            if b.tokens + (now - b.at) * self.rate < self.burst
        }


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """Refuses request bodies over a limit with 413, before the application reads them.

    A declared Content-Length over the limit is refused at once. A body without one (chunked,
    or HTTP/2 without the header) is read up to the limit and handed on whole; one byte more
    and it is refused. Later ``receive`` calls (a disconnect) pass through.
    """

    def __init__(self, app: ASGIApp, *, default: int = DEFAULT_BODY_LIMIT,
                 limits: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.default = default
        self.limits = dict(BODY_LIMITS if limits is None else limits)

    def limit_for(self, path: str) -> int:
        """The limit of a path (exact match), else the default."""
        return self.limits.get(path.rstrip("/") or "/", self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = self.limit_for(path)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            text = declared.decode("latin-1").strip()
            if not text.isdigit():
                await _refuse(send, path, 400, f"Content-Length {text!r} is not a number")
                return
            if int(text) > limit:
                await _refuse(send, path, 413, _too_large(int(text), limit, path))
                return
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_at_most(receive, limit)
        except _TooLarge:
            await _refuse(send, path, 413, _too_large(None, limit, path))
            return
        if body is None:
            return  # the client went away while sending
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _read_at_most(receive: Receive, limit: int) -> bytes | None:
    data = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        data += message.get("body", b"")
        if len(data) > limit:
            raise _TooLarge
        if not message.get("more_body", False):
            return bytes(data)


def _too_large(size: int | None, limit: int, path: str) -> str:
    shown = f"{limit // MIB} MiB" if limit % MIB == 0 else f"{limit} bytes"
    what = f"of {size} bytes " if size is not None else ""
    return (f"request body {what}exceeds the limit of {limit} bytes ({shown}) for"
            f" {path}")


async def _refuse(send: Send, path: str, status: int, message: str) -> None:
    """The error in the shape the route would have answered: FHIR under /fhir/, else JSON."""
    if path.startswith("/fhir/"):
        code = "too-costly" if status == 413 else "invalid"
        body, kind = dumps(fhir.operation_outcome(code, message)), fhir.FHIR_JSON
    else:
        body, kind = dumps({"detail": message}), "application/json"
    data = body.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind.encode()),
                            (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})
