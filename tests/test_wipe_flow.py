"""Reconditioning over the real path: the wipe command waits retained on the broker for the
device, its confirmation comes up through the broker and the gateway and revokes the
device's credentials, and only then can reconditioning finish."""

from __future__ import annotations

import json
import secrets
import threading
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest

from gateway import db
from gateway.mqtt import new_client
from gateway.renewal_thread import RenewalLoop
from gateway.services.mosquitto import MosquittoProcess
from provisioning import downlink, lifecycle, service
from provisioning.errors import ConflictError
from simulators.hub import Hub
from tests.support import SECRET, running_gateway, wait_for

PASSPHRASE = secrets.token_urlsafe(24).encode()


def test_a_device_offline_at_the_start_gets_the_wipe_and_confirms_it(
        database_url: str, mosquitto: MosquittoProcess) -> None:
    hub = _returned_hub(database_url, "W1")
    with psycopg.connect(database_url) as conn:
        # Started where no broker is reachable (as the API does): the command stays pending.
        wipe = lifecycle.start_reconditioning(conn, device_id=hub, actor="t", reason="reuse")
        pending = _request(conn, hub)
    commands: list[tuple[str, bytes]] = []
    answered = threading.Event()

    def on_command(command: str, payload: bytes) -> None:
        commands.append((command, payload))
        # The device erases itself and answers with the nonce, off the MQTT thread.
        if command == "wipe":
            threading.Thread(target=confirm, args=(json.loads(payload)["nonce"],)).start()

    def confirm(nonce: str) -> None:
        # Before its confirmation, a reading it still sends belongs to no patient.
        device.publish(hub, "status", json.dumps({
            "v": 1, "type": "status", "at": datetime.now(UTC).isoformat(),
            "battery": 80}).encode())
        body = json.dumps({"v": 1, "type": "wipe_done", "nonce": nonce,
                           "at": datetime.now(UTC).isoformat()}).encode()
        device.publish(hub, "wipe", body)
        answered.set()

    loop = RenewalLoop(database_url, mosquitto.url, PASSPHRASE, interval_s=3600)
    with running_gateway(database_url, mosquitto.url):
        loop.start()
        try:
            wait_for(lambda: loop.rounds, 15, "the first downlink round")
            published = _request_of(database_url, hub)
            # The device connects only now: the retained command is waiting for it.
            device = Hub(mosquitto.url, hub, on_command=on_command)
            device.connect()
            try:
                with psycopg.connect(database_url) as conn, pytest.raises(ConflictError):
                    lifecycle.finish_reconditioning(conn, device_id=hub, actor="t")
                assert answered.wait(10)
                wait_for(lambda: _confirmed(database_url, hub), what="the recorded confirmation")
            finally:
                device.close()
            loop.run_once()
            second = loop.last_wipes
        finally:
            loop.stop()
    after = _retained(mosquitto, wipe.topic)
    with psycopg.connect(database_url) as conn:
        cleared = _request(conn, hub)
        credentials = conn.execute("SELECT mqtt_password_hash IS NOT NULL FROM devices"
                                   " WHERE id = %s", (hub,)).fetchone()
        dead = conn.execute("SELECT channel, reason FROM dead_letters WHERE device_id = %s",
                            (hub,)).fetchall()
        stored = conn.execute("SELECT channel FROM events WHERE device_id = %s ORDER BY id",
                              (hub,)).fetchall()
        finished = lifecycle.finish_reconditioning(conn, device_id=hub, actor="t")
        actions = [(row["action"], row["actor"]) for row in service.history(conn, hub)]
    assert pending == {"published": False, "cleared": False}
    assert published == {"published": True, "cleared": False}
    assert commands == [("wipe", wipe.payload.encode())]
    assert json.loads(wipe.payload) == {"nonce": wipe.nonce, "device": hub}
    assert cleared == {"published": True, "cleared": True}
    assert [(w["action"], w["published"]) for w in second] == [
        (downlink.CLEARED, True)]
    assert after == []
    assert credentials == (False,)
    assert dead == [("status", "reconditioning_device")]
    assert stored == [("wipe",)]
    assert finished["state"] == "in_stock"
    assert actions[-6:] == [
        ("wipe_requested", "t"), (downlink.PUBLISHED, "downlink"), ("wipe_confirmed", "gateway"),
        ("credentials_revoked", "gateway"), (downlink.CLEARED, "downlink"), ("reconditioned", "t"),
    ]


def test_a_wipe_goes_out_within_the_downlink_interval_not_the_renewal_one(
        database_url: str, mosquitto: MosquittoProcess) -> None:
    hub = _returned_hub(database_url, "W2")
    loop = RenewalLoop(database_url, mosquitto.url, PASSPHRASE, interval_s=3600,
                       downlink_interval_s=0.2)
    loop.start()
    try:
        wait_for(lambda: loop.rounds, 15, "the first round")
        # Requested after the first (full) round: only a wipe round of its own can send it.
        with psycopg.connect(database_url) as conn:
            wipe = lifecycle.start_reconditioning(conn, device_id=hub, actor="t",
                                                  reason="reuse")
        wait_for(lambda: _request_of(database_url, hub)["published"], 5,
                 "the wipe published by a downlink round")
        rounds, renewal_rounds = loop.rounds, loop.renewal_rounds
    finally:
        loop.stop()
    assert _retained(mosquitto, wipe.topic) == [wipe.payload.encode()]
    assert rounds >= 2
    assert renewal_rounds == 1


def _request(conn: psycopg.Connection[Any], device: str) -> dict[str, bool]:
    row = conn.execute("SELECT published_at IS NOT NULL, cleared_at IS NOT NULL"
                       " FROM wipe_requests WHERE device_id = %s", (device,)).fetchone()
    assert row is not None
    return {"published": row[0], "cleared": row[1]}


def _request_of(url: str, device: str) -> dict[str, bool]:
    with psycopg.connect(url) as conn:
        return _request(conn, device)


def _confirmed(url: str, device: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM device_history WHERE device_id = %s"
                           " AND action = 'wipe_confirmed'", (device,)).fetchone()
    return row is not None and row[0] == 1


def _retained(broker: MosquittoProcess, topic: str) -> list[bytes]:
    """What a new subscriber gets on the topic within a second: the retained message, if any."""
    seen: list[bytes] = []
    subscribed = threading.Event()
    client: mqtt.Client = new_client("retained-check", protocol=5)
    client.on_message = lambda c, u, m: seen.append(bytes(m.payload))
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.subscribe(topic, qos=1)
        assert subscribed.wait(5)
        threading.Event().wait(1)
    finally:
        client.disconnect()
        client.loop_stop()
    return seen


def _returned_hub(database_url: str, serial: str) -> str:
    """A password hub of principal 20, assigned and then returned: ready for reconditioning."""
    db.migrate(database_url)
    with psycopg.connect(database_url) as conn:
        service.add_principal(conn, "20", "Region Dalarna", "password")
        hub: str = service.onboard_device(conn, principal="20", model="sim-hub", serial=serial,
                                          actor="t")["device_id"]
        service.assign(conn, SECRET, device_id=hub, patient="p-1", basis="SoL", actor="t")
        lifecycle.return_device(conn, device_id=hub, actor="t", reason="back")
    return hub
