"""Shared test helpers: a seeded registry, a running gateway, polling."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway import db
from gateway.api.app import create_app
from gateway.auth import Role, issue_token
from gateway.ingest.pipeline import Gateway, GatewayConfig
from gateway.token_keys import genesis_key
from provisioning import service

SECRET = b"test-secret-that-is-long-enough-for-hmac-0123456789"
T = TypeVar("T")


@dataclass(frozen=True)
class Fleet:
    """Two principals; principal 20 has a hub with a paired, assigned cuff."""

    hub: str
    cuff: str
    unpaired: str
    other_hub: str
    other_cuff: str
    patient: str = "19121212-1212"
    other_patient: str = "other-patient-1"


def seed(url: str) -> Fleet:
    """Migrate and register the test fleet."""
    db.migrate(url)
    with psycopg.connect(url) as conn:
        service.add_principal(conn, "20", "Region Dalarna", "password")
        service.add_principal(conn, "2080", "Falun")
        hub = service.onboard_device(conn, principal="20", model="hub", serial="H1", actor="t")
        cuff = service.onboard_device(conn, principal="20", model="bpm", serial="C1", actor="t")
        loose = service.onboard_device(conn, principal="20", model="bpm", serial="C2", actor="t")
        ohub = service.onboard_device(conn, principal="2080", model="hub", serial="H2", actor="t")
        ocuff = service.onboard_device(conn, principal="2080", model="bpm", serial="C3",
                                       actor="t")
        service.pair(conn, peripheral_id=cuff["device_id"], hub_id=hub["device_id"], actor="t")
        service.pair(conn, peripheral_id=ocuff["device_id"], hub_id=ohub["device_id"],
                     actor="t")
        fleet = Fleet(hub["device_id"], cuff["device_id"], loose["device_id"],
                      ohub["device_id"], ocuff["device_id"])
        # Backdated assignments so that readings with any recent device time belong to them.
        for device, patient in ((fleet.cuff, fleet.patient),
                                (fleet.other_cuff, fleet.other_patient)):
            service.assign(conn, SECRET, device_id=device, patient=patient, basis="HSL",
                           actor="t")
            conn.execute("UPDATE assignments SET valid_from = now() - interval '30 days'"
                         " WHERE device_id = %s", (device,))
    return fleet


@contextmanager
def running_gateway(database_url: str, mqtt_url: str, **options: Any) -> Iterator[Gateway]:
    """A started gateway, stopped afterwards."""
    gateway = Gateway(GatewayConfig(database_url=database_url, mqtt_url=mqtt_url, **options))
    gateway.start()
    try:
        assert gateway.wait_connected(10), "gateway did not connect to the broker"
        yield gateway
    finally:
        gateway.stop()


@contextmanager
def api_client(database_url: str, **options: Any) -> Iterator[TestClient]:
    """The API over the test database; ``options`` go to ``create_app``."""
    with TestClient(create_app(database_url=database_url, secret=SECRET, **options)) as client:
        yield client


def onboard_over_api(api: TestClient, serial: str, headers: dict[str, str],
                     model: str = "bpm") -> dict[str, Any]:
    """Onboard one device through ``POST /v1/devices``; the 201 answer's body."""
    response = api.post("/v1/devices", json={"model": model, "serial": serial},
                        headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(principal: str, role: Role = Role.CLINICIAN) -> dict[str, str]:
    """Authorization header for a principal and role.

    Signed by the first key of every database made with SECRET (derived from the secret), so
    it works before any database exists and with any app built on SECRET, until the test
    rotates the keys. Test modules mint these when pytest collects them, so they must outlive
    the whole suite (CI allows it 90 minutes): three hours.
    """
    token = issue_token(genesis_key(SECRET), principal=principal, role=role,
                        subject=f"test-{role}", ttl_seconds=3 * 3600)
    return {"Authorization": f"Bearer {token}"}


def wait_for(check: Callable[[], T | None], timeout: float = 10.0, what: str = "it") -> T:
    """Poll until check returns something truthy; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def count(url: str, sql: str, *params: Any) -> int:
    """A single integer from the database."""
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.encode(), params).fetchone()
    assert row is not None
    return int(row[0])


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """The app on a real uvicorn server on a free loopback port (for streams, which the test
    client cannot end); yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="the API server to start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
