"""The gateway and the API of a benchmark, each in its own process, as a deployment runs them.

In one process they share one interpreter lock: rendering a large FHIR Bundle would stall
ingestion, and ingestion would add to the API's latency, neither of which a deployment sees.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import Event
from typing import Any

from gateway.services.host import find_free_port

_START_TIMEOUT_S = 30.0


def _run_gateway(database_url: str, mqtt_url: str, stop: Event) -> None:
    from gateway import heap
    from gateway.ingest.pipeline import Gateway, GatewayConfig

    gateway = Gateway(GatewayConfig(database_url=database_url, mqtt_url=mqtt_url))
    gateway.start()
    # As ``aidlink gateway`` runs it.
    heap.collect_less_often()
    heap.settle()
    stop.wait()
    gateway.stop()


def _run_api(database_url: str, secret: bytes, port: int) -> None:
    import uvicorn

    from gateway.api.app import create_app

    app = create_app(database_url=database_url, secret=secret)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextmanager
def gateway_process(database_url: str, mqtt_url: str, notes: list[str]) -> Iterator[None]:
    """The gateway in a child process until the block ends; a stop that hangs is noted."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    process = context.Process(target=_run_gateway, args=(database_url, mqtt_url, stop),
                              name="bench-gateway")
    process.start()
    try:
        yield
    finally:
        stop.set()
        process.join(30)
        if process.is_alive():
            notes.append("the gateway did not stop within 30 s; it was killed")
            process.kill()
            process.join(5)


def healthz(port: int) -> tuple[int, dict[str, Any]] | None:
    """The status and JSON body of ``/healthz`` on a local port; None while nothing answers
    there (or the answer is no JSON object)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        body = json.loads(response.read())
    except (OSError, ValueError):
        return None
    finally:
        connection.close()
    return (response.status, body) if isinstance(body, dict) else None


def _healthy(port: int) -> bool:
    answer = healthz(port)
    return answer is not None and answer[0] == 200


@contextmanager
def api_process(database_url: str, secret: bytes) -> Iterator[int]:
    """The API served by uvicorn in a child process on a free port; yields the port."""
    context = multiprocessing.get_context("spawn")
    port = find_free_port()
    process = context.Process(target=_run_api, args=(database_url, secret, port),
                              name="bench-api")
    process.start()
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _healthy(port):
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start on 127.0.0.1:{port}")
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join(5)
