"""Certificates renewed on schedule for the key the device holds, and delivered over MQTT."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway import db
from gateway.renewal_thread import RenewalLoop
from gateway.services.mosquitto import MosquittoProcess
from provisioning import lifecycle, pki, policy, renewal, service
from provisioning.policy import set_policy
from simulators.hub import Hub
from tests.support import SECRET, wait_for

Conn = psycopg.Connection[Any]
PASSPHRASE = secrets.token_urlsafe(24).encode()
# Issued this long ago under a 365-day lifetime, a certificate is 15 days from expiry:
# inside the default 30-day renewal window.
AGED = timedelta(days=350)


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    """A migrated database with Region Dalarna (mTLS, EC P-256) and Falun."""
    db.migrate(database_url)
    with psycopg.connect(database_url, autocommit=True) as connection:
        service.add_principal(connection, "20", "Region Dalarna")
        service.add_principal(connection, "2080", "Falun")
        yield connection


def _device(conn: Conn, principal: str, serial: str) -> str:
    row = service.onboard_device(conn, principal=principal, model="sim-hub", serial=serial,
                                 actor="tech-1")
    return str(row["device_id"])


def _csr(key: ec.EllipticCurvePrivateKey) -> str:
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "factory")]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())


def _issue(conn: Conn, device: str, principal: str = "20", *, age: timedelta = AGED,
           key: ec.EllipticCurvePrivateKey | None = None) -> pki.Issued:
    return pki.issue(conn, PASSPHRASE, device_id=device, principal=principal,
                     client_id=device, csr_pem=None if key is None else _csr(key),
                     now=datetime.now(UTC) - age)


def _public(pem: str) -> bytes:
    cert = x509.load_pem_x509_certificate(pem.encode())
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def _actions(conn: Conn, device: str) -> list[str]:
    rows = conn.execute("SELECT action FROM device_history WHERE device_id = %s ORDER BY id",
                        (device,)).fetchall()
    return [row[0] for row in rows]


class Commands:
    """What a simulated device receives on its down topics."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, command: str, payload: bytes) -> None:
        with self.lock:
            self.received.append((command, json.loads(payload)))


def test_the_schedule_renews_for_the_device_key_and_delivers_over_mqtt(
        conn: Conn, database_url: str, mosquitto: MosquittoProcess) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    online, offline, fresh = (_device(conn, "20", s) for s in ("A", "B", "D"))
    rekey = _device(conn, "2080", "C")
    old = _issue(conn, online, key=key)
    _issue(conn, offline)
    _issue(conn, rekey, "2080")
    _issue(conn, fresh, age=timedelta(days=1))
    set_policy(conn, "2080", {"key_algorithm": "EC-P384"}, "test")
    commands, late = Commands(), Commands()
    hub = Hub(mosquitto.url, online, on_command=commands)
    hub.connect()
    loop = RenewalLoop(database_url, mosquitto.url, PASSPHRASE, interval_s=3600)
    loop.start()
    try:
        wait_for(lambda: loop.rounds, 15, "the first renewal round")
        wait_for(lambda: commands.received, 5, "the certificate at the device")
        second = loop.run_once()
        # Retained: a device that was offline finds its certificate when it connects.
        later = Hub(mosquitto.url, offline, on_command=late)
        later.connect()
        wait_for(lambda: late.received, 5, "the retained certificate")
        later.close()
    finally:
        loop.stop()
        hub.close()
    ((command, document),) = commands.received
    assert command == renewal.COMMAND
    assert document["v"] == 1
    new_cert = x509.load_pem_x509_certificate(document["certificate_pem"].encode())
    intermediate = x509.load_pem_x509_certificates(document["ca_chain_pem"].encode())[0]
    new_cert.verify_directly_issued_by(intermediate)
    assert _public(document["certificate_pem"]) == _public(old.certificate_pem)
    assert format(new_cert.serial_number, "x") == document["serial"] != old.serial
    assert new_cert.not_valid_after_utc > old.not_after
    assert new_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == online
    # The old certificate stays valid (not revoked) until it expires.
    assert conn.execute("SELECT revoked_at, replaced_by FROM certificates WHERE serial = %s",
                        (old.serial,)).fetchone() == (None, document["serial"])
    assert _actions(conn, online)[-2:] == ["certificate_renewed", renewal.DELIVERED]
    assert [c for c, _ in late.received] == [renewal.COMMAND]
    assert second == {"renewed": [], "refused": [
        {"device_id": rekey, "serial": second["refused"][0]["serial"],
         "reason": second["refused"][0]["reason"]}], "delivered": []}
    assert "key_algorithm: EC-P384" in second["refused"][0]["reason"]
    assert "certificate_renewed" not in _actions(conn, fresh)


def test_a_certificate_the_broker_did_not_take_is_sent_again(conn: Conn) -> None:
    device = _device(conn, "20", "A")
    _issue(conn, device)
    attempts: list[str] = []

    def refused(topic: str, payload: bytes) -> bool:
        attempts.append(topic)
        return False

    first = renewal.run_round(conn, PASSPHRASE, refused)
    pending = renewal.pending_deliveries(conn)
    second = renewal.run_round(conn, PASSPHRASE, lambda topic, payload: True)
    assert [r["device_id"] for r in first["renewed"]] == [device]
    assert [d["published"] for d in first["delivered"]] == [False]
    assert attempts == [f"aidlink/v1/{device}/down/certificate"]
    assert [p.serial for p in pending] == [first["renewed"][0]["serial"]]
    assert second["renewed"] == []
    assert [(d["serial"], d["published"]) for d in second["delivered"]] == [
        (first["renewed"][0]["serial"], True)]
    assert renewal.pending_deliveries(conn) == []


def test_a_reissued_certificate_is_not_sent_over_mqtt(conn: Conn) -> None:
    device = _device(conn, "20", "A")
    _issue(conn, device)
    _issue(conn, device, age=timedelta(0))  # a reissue supersedes: it went out in a bundle
    assert renewal.pending_deliveries(conn) == []


def test_a_device_below_the_minimum_firmware_or_of_a_model_no_longer_allowed_is_not_renewed(
        conn: Conn) -> None:
    old_firmware, current, other_model = (
        str(service.onboard_device(conn, principal="20", model=model, serial=serial,
                                   actor="tech-1", firmware_version=firmware)["device_id"])
        for model, serial, firmware in (("sim-hub", "F1", "1.0.0"), ("sim-hub", "F2", "2.1"),
                                        ("sim-bpm", "F3", "9.0")))
    for device in (old_firmware, current, other_model):
        _issue(conn, device)
    set_policy(conn, "20", {"allowed_models": ["sim-hub"], "min_firmware": {"sim-hub": "2.0"}},
               "test")
    result = renewal.run_round(conn, PASSPHRASE, lambda topic, payload: True)
    assert [r["device_id"] for r in result["renewed"]] == [current]
    refused = {r["device_id"]: r["reason"] for r in result["refused"]}
    assert refused == {
        old_firmware: "not renewed: firmware 1.0.0 of sim-hub is below the minimum 2.0"
                      " (policy v1)",
        other_model: "not renewed: model sim-bpm is not allowed by principal 20's policy v1"
                     " (allowed_models: sim-hub)",
    }
    # The wording is the policy check's, rule for rule.
    checked = {f["device_id"]: f["reasons"] for f in policy.fleet_check(conn, "20")}
    assert refused[old_firmware] == "not renewed: " + "; ".join(checked[old_firmware])
    assert "certificate_renewed" not in _actions(conn, old_firmware)
    assert "certificate_renewed" not in _actions(conn, other_model)
    assert "certificate_renewed" in _actions(conn, current)


def _recondition(conn: Conn, device: str) -> None:
    service.assign(conn, SECRET, device_id=device, patient="p-1", basis="HSL", actor="t")
    lifecycle.return_device(conn, device_id=device, actor="t", reason="patient moved")
    lifecycle.start_reconditioning(conn, device_id=device, actor="t", reason="reuse")


def test_a_device_being_reconditioned_is_neither_renewed_nor_sent_a_certificate(
        conn: Conn) -> None:
    renewed_before, due_during, in_stock = (_device(conn, "20", s) for s in ("R1", "R2", "R3"))
    _issue(conn, renewed_before)
    # Renewed while still in service, but the broker did not take the certificate.
    first = renewal.run_round(conn, PASSPHRASE, lambda topic, payload: False)
    waiting = [p.device_id for p in renewal.pending_deliveries(conn)]
    for device in (due_during, in_stock):
        _issue(conn, device)
    for device in (renewed_before, due_during):
        _recondition(conn, device)
    due = [row["device_id"] for row in pki.due_for_renewal(conn)]
    sent: list[str] = []

    def accepted(topic: str, payload: bytes) -> bool:
        sent.append(topic)
        return True

    second = renewal.run_round(conn, PASSPHRASE, accepted)
    assert [r["device_id"] for r in first["renewed"]] == [renewed_before]
    assert waiting == [renewed_before]
    assert due == [in_stock]
    assert [r["device_id"] for r in second["renewed"]] == [in_stock]
    assert second["refused"] == []
    assert sent == [f"aidlink/v1/{in_stock}/down/{renewal.COMMAND}"]
    assert renewal.pending_deliveries(conn) == []
    assert "certificate_renewed" not in _actions(conn, due_during)
    assert renewal.DELIVERED not in _actions(conn, renewed_before)
