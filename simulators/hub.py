"""A hub (a phone or home gateway) that forwards its paired peripherals' values over MQTT.

It publishes with QoS 1 on ``aidlink/v1/{hub}/{device}/{channel}``; over MQTT 5 it adds the
``received-at`` and ``seq`` user properties as real hubs do (``received-at`` is the moment the
hub got the value: now, or a simulated moment). Given ``on_command`` it subscribes to its down
topics ``aidlink/v1/{hub}/down/#`` and hands each command and payload to it, on the MQTT
network thread: the handler must not block or publish and wait.
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
                 username: str | None = None, password: str | None = None,
                 on_command: Callable[[str, bytes], None] | None = None) -> None:
        self.client_id = client_id
        self._down = f"aidlink/v1/{client_id}/down/"
        self._on_command = on_command
        self._protocol = protocol
        self._target = parse_mqtt_url(mqtt_url)
        self._client = new_client(client_id, protocol=protocol)
        user = username if username is not None else self._target.username
        if user is not None:
            self._client.username_pw_set(user, password or self._target.password)
        self._connected = threading.Event()
        self._seq = 0
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            return
        if self._on_command is not None:
            # Subscribed on every connect, so a reconnect without a session keeps commands.
            client.subscribe(self._down + "#", qos=1)
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._on_command is not None and message.topic.startswith(self._down):
            self._on_command(message.topic[len(self._down):], bytes(message.payload))

    def connect(self, timeout: float = 10.0) -> None:
        """Connect and wait for the broker's answer."""
        self._client.connect(self._target.host, self._target.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self._client.loop_stop()
            raise HubError(f"hub {self.client_id} could not connect to "
                           f"{self._target.host}:{self._target.port}")

    def publish(self, device_id: str, channel: str, payload: bytes,
                timeout: float = 10.0, *, received_at: datetime | None = None) -> None:
        """Publish one value with QoS 1 and wait until the broker has it."""
        self._seq += 1
        props = None
        if self._protocol == 5:
            got = (received_at or datetime.now(UTC)).astimezone(UTC)
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = [
                ("received-at", got.isoformat().replace("+00:00", "Z")),
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
