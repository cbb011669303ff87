"""The deployment files we ship are valid for the real programs that read them."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.services.mosquitto import find_mosquitto
from gateway.services.postgres import find_free_port
from tests.conftest import missing_component

CONF = Path(__file__).parent.parent / "docker" / "mosquitto" / "mosquitto.conf"


def test_shipped_mosquitto_settings_never_drop_queued_messages() -> None:
    text = CONF.read_text()
    settings = dict(re.findall(r"^(\w+) (.+)$", text, flags=re.MULTILINE))
    assert settings["max_queued_messages"] == "0"
    assert settings["max_queued_bytes"] == "0"
    assert settings["persistence"] == "true"
    assert settings["allow_anonymous"] == "false"
    assert int(settings["max_inflight_messages"]) >= 1000


def test_mosquitto_starts_on_the_shipped_settings(tmp_path: Path) -> None:
    executable = find_mosquitto()
    if executable is None:
        missing_component("mosquitto not installed: apt-get install mosquitto")
    port = find_free_port()
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "data").mkdir()
    # Only the host paths and the port change; every other line is started as shipped.
    text = (CONF.read_text()
            .replace("listener 1883 127.0.0.1", f"listener {port} 127.0.0.1")
            .replace("/mosquitto/data/", f"{tmp_path}/data/")
            .replace("/mosquitto/config/conf.d", f"{tmp_path}/conf.d")
            + "user root\n")
    config = tmp_path / "mosquitto.conf"
    config.write_text(text)
    log = (tmp_path / "mosquitto.log").open("wb")
    broker = subprocess.Popen([executable, "-c", str(config)], stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, broker)
        refused = _connect_anonymously(port)
        assert refused == "Not authorized", refused
    finally:
        broker.terminate()
        broker.wait(timeout=10)
        log.close()
    assert broker.returncode == 0, (tmp_path / "mosquitto.log").read_text()


def _wait_for_port(port: int, broker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert broker.poll() is None, "mosquitto exited on the shipped settings"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"mosquitto did not listen on {port}")


def _connect_anonymously(port: int) -> str:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="anonymous-probe",
                         protocol=mqtt.MQTTv5)
    answers: list[str] = []
    client.on_connect = lambda c, u, f, reason, p: answers.append(str(reason))
    client.connect("127.0.0.1", port)
    deadline = time.monotonic() + 5
    # The broker answers with a refusing CONNACK and closes the connection; loop until paho
    # has seen both, so no socket is left open.
    while (not answers or client.socket() is not None) and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    return answers[0] if answers else "no answer"
