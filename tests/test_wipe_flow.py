"""Reconditioning over the real path: the wipe command goes down to the device, its
confirmation comes up through the broker and the gateway, and only then can it finish."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import psycopg
import pytest

from gateway import db
from gateway.cli_common import publish_command
from gateway.services.mosquitto import MosquittoProcess
from gateway.settings import load_settings
from provisioning import lifecycle, service
from provisioning.errors import ConflictError
from simulators.hub import Hub
from tests.support import SECRET, running_gateway, wait_for


def test_a_device_confirms_its_wipe_through_the_gateway(database_url: str,
                                                        mosquitto: MosquittoProcess) -> None:
    db.migrate(database_url)
    with psycopg.connect(database_url) as conn:
        service.add_principal(conn, "20", "Region Dalarna", "password")
        hub = service.onboard_device(conn, principal="20", model="sim-hub", serial="W1",
                                     actor="t")["device_id"]
        service.assign(conn, SECRET, device_id=hub, patient="p-1", basis="SoL", actor="t")
        lifecycle.return_device(conn, device_id=hub, actor="t", reason="back")
        wipe = lifecycle.start_reconditioning(conn, device_id=hub, actor="t", reason="reuse")
    answered = threading.Event()

    def on_command(command: str, payload: bytes) -> None:
        # The device erases itself and answers with the nonce, off the MQTT thread.
        if command == "wipe":
            nonce = json.loads(payload)["nonce"]
            threading.Thread(target=confirm, args=(nonce,)).start()

    def confirm(nonce: str) -> None:
        body = json.dumps({"v": 1, "type": "wipe_done", "nonce": nonce,
                           "at": datetime.now(UTC).isoformat()}).encode()
        device.publish(hub, "wipe", body)
        answered.set()

    with running_gateway(database_url, mosquitto.url):
        device = Hub(mosquitto.url, hub, on_command=on_command)
        device.connect()
        try:
            with psycopg.connect(database_url) as conn, pytest.raises(ConflictError):
                lifecycle.finish_reconditioning(conn, device_id=hub, actor="t")
            settings = load_settings(mqtt_url=mosquitto.url)
            assert publish_command(settings, wipe.topic, wipe.payload.encode())
            assert answered.wait(10)
            wait_for(lambda: _confirmed(database_url, hub), what="the recorded confirmation")
        finally:
            device.close()
    with psycopg.connect(database_url) as conn:
        finished = lifecycle.finish_reconditioning(conn, device_id=hub, actor="t")
        actor = conn.execute("SELECT actor FROM device_history WHERE device_id = %s"
                             " AND action = 'wipe_confirmed'", (hub,)).fetchone()
    assert finished["state"] == "in_stock"
    assert actor == ("gateway",)


def _confirmed(url: str, device: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM device_history WHERE device_id = %s"
                           " AND action = 'wipe_confirmed'", (device,)).fetchone()
    return row is not None and row[0] == 1
