"""A hub (a phone or home gateway) that forwards its paired peripherals' values over MQTT.

It publishes with QoS 1 on ``aidlink/v1/{hub}/{device}/{channel}``; over MQTT 5 it adds the
``received-at`` and ``seq`` user properties as real hubs do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.mqtt import new_client, parse_mqtt_url

log = logging.getLogger(__name__)


class HubError(Exception):
    """The hub could not connect or publish; the message names the hub."""


class Hub:
    """One MQTT identity publishing for itself and its peripherals."""

    def __init__(self, mqtt_url: str, client_id: str, *, protocol: int = 5,
                 username: str | None = None, password: str | None = None) -> None:
        self.client_id = client_id
        self._protocol = protocol
        self._target = parse_mqtt_url(mqtt_url)
        self._client = new_client(client_id, protocol=protocol)
        user = username if username is not None else self._target.username
        if user is not None:
            self._client.username_pw_set(user, password or self._target.password)
        self._connected = threading.Event()
        self._seq = 0
        self._client.on_connect = self._on_connect

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if not reason_code.is_failure:
            self._connected.set()

    def connect(self, timeout: float = 10.0) -> None:
        """Connect and wait for the broker's answer."""
        self._client.connect(self._target.host, self._target.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self._client.loop_stop()
            raise HubError(f"hub {self.client_id} could not connect to "
                           f"{self._target.host}:{self._target.port}")

    def publish(self, device_id: str, channel: str, payload: bytes,
                timeout: float = 10.0) -> None:
        """Publish one value with QoS 1 and wait until the broker has it."""
        self._seq += 1
        props = None
        if self._protocol == 5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = [
                ("received-at", datetime.now(UTC).isoformat().replace("+00:00", "Z")),
                ("seq", str(self._seq)),
            ]
        topic = f"aidlink/v1/{self.client_id}/{device_id}/{channel}"
        info = self._client.publish(topic, payload, qos=1, properties=props)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise HubError(f"hub {self.client_id}: broker did not acknowledge {topic}")

    def close(self) -> None:
        """Disconnect cleanly."""
        self._client.disconnect()
        self._client.loop_stop()


def run_fleet(hub: Hub, devices: Sequence[tuple[str, Callable[[datetime], bytes]]], *,
              count: int, interval: float, stop: threading.Event,
              channel: str = "ble/2a35") -> int:
    """Publish ``count`` rounds (0 = until stopped), one value per device per round."""
    sent = 0
    rounds = 0
    while not stop.is_set() and (count == 0 or rounds < count):
        now = datetime.now(UTC)
        for device_id, measure in devices:
            hub.publish(device_id, channel, measure(now))
            sent += 1
        rounds += 1
        if count and rounds >= count:
            break
        stop.wait(interval)
    return sent
