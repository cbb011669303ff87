"""The written broker configuration against a real Mosquitto over TLS: ACL, CRL, SIGHUP.

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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway import db
from gateway.mqtt import new_client
from gateway.services.mosquitto import find_mosquitto
from gateway.services.postgres import find_free_port
from provisioning import pki, service
from provisioning.broker_config import (
    ACL_TEXT,
    GATEWAY_USER,
    refresh_credentials,
    reload_broker,
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


def test_a_device_publishes_and_reads_only_under_its_own_client_id(site: Site) -> None:
    a1, a2 = site.devices["a1"], site.devices["a2"]
    with running_broker(site), ExitStack() as stack:
        gateway = Session(site.ports["plain"], GATEWAY_USER, username=GATEWAY_USER,
                          password=GATEWAY_PASSWORD)
        stack.callback(gateway.close)
        assert gateway.subscribe("aidlink/v1/#") == [1]
        other = Session(site.ports["mtls"], a2, context=site.context("a2"))
        stack.callback(other.close)
        other.subscribe(f"aidlink/v1/{a2}/down/#")
        spoofer = Session(site.ports["mtls"], a1, context=site.context("a1"))
        spoofer.publish(f"aidlink/v1/{a1}/{a1}/status", b"ok")
        spoofer.client.publish(f"aidlink/v1/{a2}/{a2}/status", b"spoofed", qos=1)
        # Mosquitto drops the publish and closes the connection (MQTT-3.3.5-2 allows it).
        wait_for(lambda: spoofer.drops, 5, "the broker to close the spoofer's connection")
        spoofer.close()
        # The certificate, not the client id asked for, decides who a1 is: no session takeover.
        device = Session(site.ports["mtls"], a2, context=site.context("a1"))
        stack.callback(device.close)
        granted = [device.subscribe(f"aidlink/v1/{a2}/down/#"),
                   device.subscribe("aidlink/v1/+/down/#")]
        device.publish(f"aidlink/v1/{a1}/{a1}/status", b"done")
        wait_for(lambda: len(gateway.messages) >= 2, 5, "the gateway to see a1's messages")
        uplink = list(gateway.messages)
        gateway.publish(f"aidlink/v1/{a2}/down/wipe", b"for a2")
        gateway.publish(f"aidlink/v1/{a1}/down/time", b"for a1")
        wait_for(lambda: device.messages, 5, "a1's command")
        wait_for(lambda: other.messages, 5, "a2's command")
        assert (other.drops, device.drops) == (0, 0)
    assert uplink == [(f"aidlink/v1/{a1}/{a1}/status", b"ok"),
                      (f"aidlink/v1/{a1}/{a1}/status", b"done")]
    # Mosquitto grants the subscriptions but delivers only what a1 may read.
    assert granted == [[1], [1]]
    assert device.messages == [(f"aidlink/v1/{a1}/down/time", b"for a1")]
    assert other.messages == [(f"aidlink/v1/{a2}/down/wipe", b"for a2")]


def test_revocation_takes_effect_on_sighup_without_dropping_other_sessions(site: Site) -> None:
    a1, a2, b1 = site.devices["a1"], site.devices["a2"], site.devices["b1"]
    with running_broker(site) as broker, ExitStack() as stack:
        kept = Session(site.ports["mtls"], a1, context=site.context("a1"))
        stack.callback(kept.close)
        pki.revoke(site.conn, PASSPHRASE, b1, "key_compromise", "test")
        site.refresh(sighup=False)
        # Falun's CRL is the last of four in crl.pem; until the SIGHUP the broker uses the old.
        before_sighup = site.probe("mtls", site.context("b1"), b1)
        revoked = Session(site.ports["mtls"], b1, context=site.context("b1"))
        stack.callback(revoked.close)
        reload_broker(broker.pid)
        wait_for(lambda: "Reloading config." in site.log(), 5, "the reload")
        after_sighup = site.probe("mtls", site.context("b1"), b1)
        kept.publish(f"aidlink/v1/{a1}/{a1}/status", b"still here")
        other = site.probe("mtls", site.context("a2"), a2)
        sessions = {"a1": (kept.client.is_connected(), kept.drops),
                    "b1": (revoked.client.is_connected(), revoked.drops)}
        # CRLs signed by a clock an hour ahead are not yet valid to the broker. Had it kept
        # the previous CRLs beside them, OpenSSL would fall back on those; it refuses instead.
        site.refresh(now=datetime.now(UTC) + timedelta(hours=1))
        future = site.probe("mtls", site.context("a2"), a2)
    assert (before_sighup, after_sighup, other, future) == (
        ACCEPTED, TLS_REFUSED, ACCEPTED, TLS_REFUSED)
    # Mosquitto checks certificates at the handshake only: b1's open session survives too.
    assert sessions == {"a1": (True, 0), "b1": (True, 0)}


def test_expired_foreign_and_missing_certificates_are_refused(site: Site) -> None:
    foreign_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site.devices["a1"])])
    now = datetime.now(UTC)
    foreign = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(foreign_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
               .sign(foreign_key, hashes.SHA256()))
    files = site.out.parent / "devices"
    (files / "foreign.key").write_bytes(foreign_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (files / "foreign.chain.pem").write_bytes(foreign.public_bytes(serialization.Encoding.PEM))
    with running_broker(site):
        outcomes = {name: site.probe("mtls", site.context(name), site.devices.get(name, name))
                    for name in ("a1", "x1", "foreign")}
        outcomes["none"] = site.probe("mtls", site.context(), "nobody")
    assert outcomes == {"a1": ACCEPTED, "x1": TLS_REFUSED, "foreign": TLS_REFUSED,
                        "none": TLS_REFUSED}


def test_passwords_work_only_where_the_policy_allows_them(site: Site) -> None:
    p1, q1 = site.devices["p1"], site.devices["q1"]
    with running_broker(site):
        tls = site.context()
        outcomes = {
            "p1": site.probe("password", tls, p1, p1, site.passwords["p1"]),
            "p1 wrong password": site.probe("password", tls, p1, p1, "not-" + site.passwords["p1"]),
            "q1 (policy now mtls)": site.probe("password", tls, q1, q1, site.passwords["q1"]),
            "p1 on the mTLS listener": site.probe("mtls", tls, p1, p1, site.passwords["p1"]),
            "gateway": site.probe("plain", None, GATEWAY_USER, GATEWAY_USER, GATEWAY_PASSWORD),
            "anonymous": site.probe("plain", None, "anon"),
        }
        session = Session(site.ports["password"], p1, context=tls, username=p1,
                          password=site.passwords["p1"])
        try:
            pki.revoke(site.conn, PASSPHRASE, p1, "cessation_of_operation", "test")
            site.refresh()
            # Unlike a certificate, a removed password ends the open session on reload.
            wait_for(lambda: session.drops, 5, "p1's session to be dropped")
            outcomes["p1 revoked"] = site.probe("password", tls, p1, p1, site.passwords["p1"])
        finally:
            session.close()
    assert outcomes == {
        "p1": ACCEPTED, "p1 wrong password": NOT_AUTHORISED,
        "q1 (policy now mtls)": NOT_AUTHORISED, "p1 on the mTLS listener": TLS_REFUSED,
        "gateway": ACCEPTED, "anonymous": NOT_AUTHORISED, "p1 revoked": NOT_AUTHORISED,
    }


def test_sighup_loads_a_new_principals_intermediate_and_crl(site: Site) -> None:
    service.add_principal(site.conn, "2026", "Gagnef")
    n1 = certify(site, "n1", "2026")
    with running_broker(site):
        site.refresh(sighup=False)
        # Even with its chain, n1 is refused while the broker has no CRL of Gagnef's CA.
        before = [site.probe("mtls", site.context("n1", chain=chain), n1)
                  for chain in (True, False)]
        site.refresh()
        after = site.probe("mtls", site.context("n1", chain=False), n1)
    assert (before, after) == ([TLS_REFUSED, TLS_REFUSED], ACCEPTED)


def test_the_strictest_policy_sets_the_minimum_tls_version(site: Site) -> None:
    a1 = site.devices["a1"]
    with running_broker(site):
        before = [site.probe("mtls", site.context("a1", tls=v), a1)
                  for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)]
    set_policy(site.conn, "2080", {"min_tls_version": "1.3"}, "test")
    assert configure(site)["tls_version"] == "tlsv1.3"
    with running_broker(site):
        after = [site.probe("mtls", site.context("a1", tls=v), a1)
                 for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)]
    assert (before, after) == ([ACCEPTED, ACCEPTED], [TLS_REFUSED, ACCEPTED])


def test_the_written_files(site: Site) -> None:
    out, ports = site.out, site.ports
    user = "user root\n" if os.geteuid() == 0 else ""
    tls = (f"certfile {out}/server.pem\nkeyfile {out}/server.key\ncafile {out}/ca-chain.pem\n"
           "tls_version tlsv1.2\n")
    assert (out / "mosquitto.conf").read_text() == (
        "# Generated by aidlink broker-config; rewritten on every run. SIGHUP reloads the\n"
        "# certificate, key, CRL, password and ACL files without dropping sessions.\n"
        f"per_listener_settings false\nallow_anonymous false\npassword_file {out}/passwords\n"
        f"acl_file {out}/acl\n{user}persistence true\npersistence_location {out}/data/\n"
        "autosave_interval 1\nmax_inflight_messages 1000\nmax_queued_messages 0\n"
        "max_queued_bytes 0\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\n"
        "log_type warning\nlog_type notice\nlog_type information\n\n"
        "# Devices with certificates: the CN is the username and the client id.\n"
        f"listener {ports['mtls']} {HOST}\n{tls}crlfile {out}/crl.pem\n"
        "require_certificate true\nuse_identity_as_username true\n"
        "use_username_as_clientid true\n\n"
        "# Devices of principals whose policy allows passwords, over TLS.\n"
        f"listener {ports['password']} {HOST}\n{tls}use_username_as_clientid true\n\n"
        "# The gateway and local tools: loopback only, passwords, no TLS.\n"
        f"listener {ports['plain']} 127.0.0.1\n")
    assert (out / "acl").read_text() == ACL_TEXT
    users = [line.split(":")[0] for line in (out / "passwords").read_text().splitlines()]
    assert users == [GATEWAY_USER, site.devices["p1"]]
    modes = {name: (out / name).stat().st_mode & 0o777 for name in ("server.key", "passwords")}
    assert modes == {"server.key": 0o600, "passwords": 0o600}
    end = "-----END X509 CRL-----\n"
    blocks = [block + end for block in (out / "crl.pem").read_text().split(end) if block]
    issuers = [x509.load_pem_x509_crl(block.encode()).issuer.rfc4514_string()
               for block in blocks]
    assert issuers == [f"CN=aidlink principal {code} CA,O=aidlink"
                       for code in ("20", "2021", "2023", "2080")]
    (server,) = x509.load_pem_x509_certificates((out / "server.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(name.value) for name in names] == ["localhost", "127.0.0.1"]
