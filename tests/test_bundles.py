"""Provisioning bundles from `aidlink device onboard`: the broker devices use (never anyone's
credentials), the topic prefix and the model's profile settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway import db
from gateway.settings import ConfigurationError, Settings, device_broker_url, without_userinfo
from tests.cli_support import add_principal, environment, failure, one, run

# The gateway's own URL as docker/compose.yaml sets it: its user and password on loopback.
GATEWAY_PASSWORD = "gw-Secret-7f3a9c"  # a test value, looked for in the bundles
GATEWAY_URL = f"mqtt://aidlink-gateway:{GATEWAY_PASSWORD}@127.0.0.1:1883"


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str | None]:
    db.migrate(database_url)
    return environment(tmp_path / "home", database_url) | {"AIDLINK_MQTT_URL": GATEWAY_URL}


def _everything_written(out: Path) -> str:
    return "".join(path.read_text() for path in sorted(out.iterdir()))


def test_a_bundle_never_carries_the_gateway_password_from_aidlink_mqtt_url(
        env: dict[str, str | None], tmp_path: Path) -> None:
    add_principal(env, "2080")
    out = tmp_path / "bundle"
    result = run(env, "device", "onboard", "--principal", "2080", "--model", "sim-bpm",
                 "--serial", "B-1", "--out", str(out))
    row = one(result)
    assert GATEWAY_PASSWORD not in result.output
    assert GATEWAY_PASSWORD not in _everything_written(out)
    assert "aidlink-gateway" not in result.output
    # Without AIDLINK_DEVICE_BROKER_URL: the gateway broker's host and port, nothing else.
    assert row["mqtt_url"] == "mqtt://127.0.0.1:1883"
    assert row["topic_prefix"] == f"aidlink/v1/{row['client_id']}/"
    assert row["profile"]["model"] == "sim-bpm"
    assert "ble/2a35" in row["profile"]["channels"]
    assert json.loads((out / "bundle.json").read_text()) == row


def test_the_device_broker_setting_is_the_bundles_address_without_userinfo(
        env: dict[str, str | None], tmp_path: Path) -> None:
    add_principal(env, "20", "password")
    given = env | {"AIDLINK_DEVICE_BROKER_URL": "mqtts://someone:pw-x9@mqtt.example.se:8883"}
    result = run(given, "device", "onboard", "--principal", "20", "--model", "sim-scale",
                 "--serial", "S-1", "--out", str(tmp_path / "bundle"))
    row = one(result)
    assert row["mqtt_url"] == "mqtts://mqtt.example.se:8883"
    written = _everything_written(tmp_path / "bundle")
    for secret in ("pw-x9", "someone", GATEWAY_PASSWORD):
        assert secret not in result.output and secret not in written
    # The device's own password is the one credential in its bundle.
    assert json.loads(written)["mqtt_password"] == row["mqtt_password"]
    assert row["profile"]["model"] == "sim-scale"


def test_a_malformed_device_broker_setting_onboards_nothing_and_says_so(
        env: dict[str, str | None]) -> None:
    add_principal(env, "2080")
    given = env | {"AIDLINK_DEVICE_BROKER_URL": "https://user:hunter2@mqtt.example.se"}
    message = failure(run(given, "device", "onboard", "--principal", "2080", "--model",
                          "sim-bpm", "--serial", "B-2"))
    assert message.startswith("aidlink: AIDLINK_DEVICE_BROKER_URL https://mqtt.example.se")
    assert "mqtts://host:port" in message and "hunter2" not in message
    listed = run(env, "device", "onboard", "--principal", "2080", "--model", "sim-bpm",
                 "--serial", "B-2")
    assert one(listed)["serial"] == "B-2"  # the refused attempt left no device behind


def test_without_any_broker_known_the_bundle_has_no_address(
        database_url: str, tmp_path: Path) -> None:
    db.migrate(database_url)
    env = environment(tmp_path / "home", database_url)
    add_principal(env, "2080")
    row = one(run(env, "device", "onboard", "--principal", "2080", "--model", "sim-bpm",
                  "--serial", "B-3"))
    assert "mqtt_url" not in row
    assert row["topic_prefix"] == f"aidlink/v1/{row['client_id']}/"


@pytest.mark.parametrize(("url", "expected"), [
    ("mqtts://u:p@broker.example.se:8883", "mqtts://broker.example.se:8883"),
    ("mqtts://u@broker.example.se", "mqtts://broker.example.se"),
    ("wss://u:p@[2001:db8::1]:443/mqtt?token=t", "wss://[2001:db8::1]:443/mqtt"),
    ("mqtt://broker:1883", "mqtt://broker:1883"),
])
def test_userinfo_is_stripped_from_every_form(url: str, expected: str) -> None:
    assert without_userinfo(url) == expected


def test_the_fallback_keeps_only_host_and_port_of_the_gateway_url(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, mqtt_url=GATEWAY_URL + "/ignored?x=1")
    assert device_broker_url(settings) == "mqtt://127.0.0.1:1883"
    assert device_broker_url(Settings(home=tmp_path)) is None
    with pytest.raises(ConfigurationError, match="must look like mqtts://host:port"):
        device_broker_url(Settings(home=tmp_path, device_broker_url="broker.example.se:8883"))
