"""A site for broker tests: a fleet, the files ``write_broker_config`` wrote, a Mosquitto.

Each test runs Mosquitto on the files ``write_broker_config`` wrote, on free ports. Refusals
are probed with a bare MQTT 3.1.1 CONNECT over a fresh TLS socket, so that a refused
handshake leaves no half-open client behind; sessions that must stay up use paho.
"""

from __future__ import annotations

import os
import secrets
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway import db
from gateway.mqtt import new_client
from gateway.services.mosquitto import find_mosquitto
from gateway.services.postgres import find_free_port
from provisioning import pki, service
from provisioning.broker_config import (
    refresh_credentials,
    write_broker_config,
)
from provisioning.policy import set_policy
from tests.conftest import missing_component
from tests.support import wait_for

Conn = psycopg.Connection[Any]
HOST = "127.0.0.1"
PASSPHRASE = secrets.token_urlsafe(24).encode()
GATEWAY_PASSWORD = secrets.token_urlsafe(18)
ACCEPTED, NOT_AUTHORISED, TLS_REFUSED = "accepted", "not authorised", "refused at TLS"


@dataclass
class Site:
    """A fleet, its broker files in ``out``, and the running broker."""

    conn: Conn
    out: Path
    ports: dict[str, int]
    devices: dict[str, str] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    broker: subprocess.Popen[bytes] | None = None

    def context(self, name: str | None = None, *, chain: bool = True,
                tls: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        """A client TLS context trusting our root, with a device's certificate if named."""
        context = ssl.create_default_context(cafile=self.out / "ca-chain.pem")
        if name is not None:
            files = self.out.parent / "devices"
            certfile = files / f"{name}.{'chain' if chain else 'leaf'}.pem"
            context.load_cert_chain(certfile, files / f"{name}.key")
        if tls is not None:
            context.minimum_version = context.maximum_version = tls
        return context

    def probe(self, listener: str, context: ssl.SSLContext | None, client_id: str,
              username: str | None = None, password: str | None = None) -> str:
        """Connect once with MQTT 3.1.1: accepted, not authorised, or refused at TLS."""
        def text(value: str) -> bytes:
            return len(value.encode()).to_bytes(2, "big") + value.encode()
        flags = 0x02 | (0x80 if username else 0) | (0x40 if password else 0)
        body = text("MQTT") + bytes([4, flags, 0, 30]) + text(client_id)
        body += (text(username) if username else b"") + (text(password) if password else b"")
        try:
            with socket.create_connection((HOST, self.ports[listener]), timeout=5) as raw:
                stream = raw if context is None else context.wrap_socket(raw, server_hostname=HOST)
                with stream:
                    stream.sendall(bytes([0x10, len(body)]) + body)
                    reply = stream.recv(4)
        except (ssl.SSLError, ConnectionError):
            return TLS_REFUSED
        if not reply:
            return TLS_REFUSED if context is not None else "closed"
        return {b"\x20\x02\x00\x00": ACCEPTED, b"\x20\x02\x00\x05": NOT_AUTHORISED}.get(
            reply, f"CONNACK {reply.hex()}")

    def log(self) -> str:
        """The broker's log, for failure messages."""
        return (self.out / "mosquitto.log").read_text(errors="replace")

    def refresh(self, *, sighup: bool = True, now: datetime | None = None) -> None:
        """Rewrite CRLs and passwords, SIGHUP the broker and wait until it has reloaded."""
        reloads = self.log().count("Reloading config.")
        assert self.broker is not None
        refresh_credentials(self.conn, PASSPHRASE, self.out, now=now,
                            broker_pid=self.broker.pid if sighup else None)
        if sighup:
            # The broker reloads in its event loop; a handshake it accepted before
            # then still finishes under the old CRL.
            wait_for(lambda: self.log().count("Reloading config.") > reloads, 5, "the reload")


class Session:
    """A paho MQTT 3.1.1 session that records what it receives and when it is dropped."""

    def __init__(self, port: int, client_id: str, *, context: ssl.SSLContext | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.suback: dict[int, list[int]] = {}
        self.drops = 0
        connected = threading.Event()
        self.client = new_client(client_id, protocol=4)
        if context is not None:
            self.client.tls_set_context(context)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, u, f, rc, p: connected.set() if rc == 0 else None
        self.client.on_disconnect = self._dropped
        self.client.on_subscribe = self._subscribed
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.connect(HOST, port)
        self.client.loop_start()
        assert connected.wait(5), f"{client_id} did not connect"

    def _dropped(self, *_: Any) -> None:
        self.drops += 1

    def _subscribed(self, client: Any, userdata: Any, mid: int, codes: list[Any],
                    properties: Any) -> None:
        self.suback[mid] = [code.value for code in codes]

    def subscribe(self, topic: str) -> list[int]:
        """Subscribe with QoS 1; the broker's SUBACK codes (128: refused)."""
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        return wait_for(lambda: self.suback.get(mid), 5, f"SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish with QoS 1 and wait for the broker's PUBACK."""
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def running_broker(site: Site) -> Iterator[subprocess.Popen[bytes]]:
    """Mosquitto on the written mosquitto.conf, until the block ends."""
    executable = find_mosquitto()
    if executable is None:
        missing_component("mosquitto not installed: apt-get install mosquitto")
    with (site.out / "mosquitto.log").open("wb") as log:
        process = subprocess.Popen([executable, "-c", str(site.out / "mosquitto.conf")],
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: all(_listening(port) for port in site.ports.values())
                     or process.poll() is not None, 10, "mosquitto's listeners")
            assert process.poll() is None, site.log()
            site.broker = process
            yield process
        finally:
            process.terminate()
            process.wait(10)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def configure(site: Site) -> dict[str, Any]:
    """Write the broker files for the site's ports."""
    return write_broker_config(
        site.conn, PASSPHRASE, site.out, gateway_password=GATEWAY_PASSWORD,
        listener_port=site.ports["mtls"], password_port=site.ports["password"],
        plain_port=site.ports["plain"], host=HOST,
        run_as="root" if os.geteuid() == 0 else None)


def certify(site: Site, name: str, principal: str, **options: Any) -> str:
    """Onboard a device and save its server-generated key, certificate and chain."""
    device = str(service.onboard_device(site.conn, principal=principal, model="sim-hub",
                                        serial=name, actor="test")["device_id"])
    issued = pki.issue(site.conn, PASSPHRASE, device_id=device, principal=principal,
                       client_id=device, **options)
    assert issued.private_key_pem is not None
    files = site.out.parent / "devices"
    files.mkdir(exist_ok=True)
    (files / f"{name}.key").write_text(issued.private_key_pem)
    (files / f"{name}.leaf.pem").write_text(issued.certificate_pem)
    (files / f"{name}.chain.pem").write_text(issued.certificate_pem + issued.chain_pem)
    site.devices[name] = device
    return device


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Iterator[Site]:
    """Four principals, six devices and the broker files; the broker is not started yet."""
    # Region Dalarna (20) and Falun (2080) use mTLS, Vansbro (2021) passwords; Malung (2023)
    # used passwords and now requires mTLS. Devices a1, a2 (20), b1 (2080), x1 (20, expired),
    # p1 (2021) and q1 (2023, its password left over from before).
    db.migrate(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        ports = {name: find_free_port(HOST) for name in ("mtls", "password", "plain")}
        site = Site(conn, tmp_path / "broker", ports)
        for code, name, auth in (("20", "Region Dalarna", "mtls"), ("2080", "Falun", "mtls"),
                                 ("2021", "Vansbro", "password"), ("2023", "Malung", "password")):
            service.add_principal(conn, code, name, auth)
        for name, principal in (("p1", "2021"), ("q1", "2023")):
            row = service.onboard_device(conn, principal=principal, model="sim-hub",
                                         serial=name, actor="test")
            site.devices[name], site.passwords[name] = row["device_id"], row["mqtt_password"]
        set_policy(conn, "2021", {"device_auth": "password"}, "test")
        set_policy(conn, "2023", {"device_auth": "mtls"}, "test")
        for name, principal in (("a1", "20"), ("a2", "20"), ("b1", "2080")):
            certify(site, name, principal)
        certify(site, "x1", "20", now=datetime.now(UTC) - timedelta(days=400))
        configure(site)
        yield site
