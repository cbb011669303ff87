"""The devices centre's commands after onboarding: lifecycle, licences and reports."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from click.testing import CliRunner

from gateway import db
from gateway.cli import main
from gateway.mqtt import new_client
from gateway.services.mosquitto import MosquittoProcess


class Cli:
    """The command line against one database and broker."""

    def __init__(self, url: str, broker: str, home: Path) -> None:
        self.env = {"AIDLINK_DATABASE_URL": url, "AIDLINK_MQTT_URL": broker,
                    "AIDLINK_HOME": str(home), "AIDLINK_SECRET": "s" * 40}

    def __call__(self, *args: str, code: int = 0) -> str:
        result = CliRunner().invoke(main, list(args), env=self.env)
        assert result.exit_code == code, result.output
        return result.output

    def json(self, *args: str) -> Any:
        return json.loads(self(*args))


def _watch(broker: MosquittoProcess, topic: str) -> tuple[mqtt.Client, list[bytes],
                                                           threading.Event]:
    seen: list[bytes] = []
    subscribed = threading.Event()
    client = new_client("watcher", protocol=5)
    client.on_message = lambda c, u, m: seen.append(bytes(m.payload))
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    return client, seen, subscribed


def test_a_device_goes_round_its_life_and_earns_its_licence(
        database_url: str, mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    db.migrate(database_url)
    cli = Cli(database_url, mosquitto.url, tmp_path)
    cli("principal", "add", "20", "--name", "Region Dalarna", "--device-auth", "password")
    cli("principal", "add", "2062", "--name", "Mora")
    device = cli.json("device", "onboard", "--principal", "20", "--model", "sim-bpm",
                      "--serial", "L-1")["device_id"]
    cli("licence", "vendor", "acme", "--name", "Acme Medical")
    cli("licence", "product", "123456", "--name", "Cuff", "--class", "blood_pressure_monitor",
        "--vendor", "acme")
    cli("licence", "terms", "cuff-monthly", "--article", "123456", "--period", "monthly",
        "--price", "300.00", "--acquisition", "rent", "--device-included")
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE devices SET article_number = '123456' WHERE id = %s", (device,))
    licence = cli.json("licence", "start", device, "--terms", "cuff-monthly",
                       "--from", "2026-03-16")
    assert licence["device_id"] == device
    costs = cli("report", "costs", "--month", "2026-03", "--csv")
    assert costs.splitlines()[1].endswith(",154.84,0.00,154.84")

    cli("device", "assign", device, "--patient", "p-1", "--basis", "HSL")
    assert cli.json("device", "return", device, "--reason", "cuff leaks")["state"] == "returned"
    watcher, seen, subscribed = _watch(mosquitto, f"aidlink/v1/{device}/down/wipe")
    try:
        assert subscribed.wait(5)
        wipe = cli.json("device", "recondition", device, "--reason", "back from patient")
        assert wipe["published"] is True
        assert json.loads(wipe["payload"])["device"] == device
        cli("device", "recondition", device, "--finish", code=1)
        nonce = json.loads(wipe["payload"])["nonce"]
        assert "--nonce" in cli("device", "recondition", device, "--confirm", code=2)
        assert "does not match" in cli("device", "recondition", device, "--confirm",
                                       "--nonce", "stale", code=1)
        confirmed = cli.json("device", "recondition", device, "--confirm", "--nonce", nonce,
                             "--wiped-at", "2026-11-20T10:15:00+01:00")
        assert confirmed == {"device_id": device, "confirmed_at": "2026-11-20T09:15:00Z",
                             "credentials_revoked": True}
        assert cli.json("device", "recondition", device, "--finish")["state"] == "in_stock"
        refused = cli("device", "assign", device, "--patient", "p-2", "--basis", "SoL",
                      code=1)
        assert "needs new credentials" in refused
        assert cli.json("device", "reissue", device)["device_id"] == device
    finally:
        watcher.disconnect()
        watcher.loop_stop()
    # The command, then (after the confirmation) the empty retained payload removing it.
    assert seen == [wipe["payload"].encode(), b""]
    with psycopg.connect(database_url) as conn:
        request = conn.execute("SELECT published_at IS NOT NULL, cleared_at IS NOT NULL,"
                               " confirmed_by LIKE 'cli%%' FROM wipe_requests"
                               " WHERE device_id = %s", (device,)).fetchone()
    assert request == (True, True, True)
    moved = cli.json("device", "transfer", device, "--to", "2062", "--reason", "Mora buys it")
    assert (moved["from"], moved["to"]) == ("20", "2062")
    actions = [json.loads(line)["action"] for line in cli("device", "history",
                                                          device).splitlines()]
    assert actions[0] == "onboarded"
    assert {"assigned", "returned", "reconditioning_started", "wipe_confirmed",
            "reconditioned", "transferred_out", "transferred_in"} <= set(actions)
    assert cli.json("device", "retire", device, "--reason", "worn out")["state"] == "retired"
