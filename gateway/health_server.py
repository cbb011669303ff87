"""``/healthz`` and ``/metrics`` for a gateway running as its own process.

A standalone ``aidlink gateway`` has no API in front of it, yet containers, load balancers and
Prometheus need to probe each process. The standard library's threading HTTP server is enough
for two read-only routes and keeps the gateway free of a web framework.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

HealthProvider = Callable[[], dict[str, Any]]
Exposition = Callable[[], bytes]


class HealthServer:
    """Serves the gateway's health (200 ok, 503 degraded, with reasons) and its metrics."""

    def __init__(self, health: HealthProvider, *, host: str = "127.0.0.1", port: int = 0,
                 metrics: Exposition = generate_latest) -> None:
        """Bind now (so a taken port fails at once, naming it); serve after start().
        ``metrics`` makes the ``/metrics`` body (the default registry unless told)."""
        self._health = health
        try:
            self._server = ThreadingHTTPServer((host, port), _handler(health, metrics))
        except OSError as exc:
            raise OSError(f"health port {port} on {host} is not available: {exc}") from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="aidlink-health", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (the one the system picked when 0 was asked)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


def _handler(health: HealthProvider, metrics: Exposition) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "aidlink-gateway"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                body = health()
                status = 200 if body["status"] == "ok" else 503
                self._send(status, "application/json", json.dumps(body).encode())
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, metrics())
            else:
                detail = {"detail": f"no route {path!r}; try /healthz or /metrics"}
                self._send(404, "application/json", json.dumps(detail).encode())

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Probes arrive every few seconds; the default writes each to stderr.
            log.debug("health probe: " + format, *args)

    return Handler
