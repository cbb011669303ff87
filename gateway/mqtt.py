"""MQTT connection details shared by the gateway, the simulators and the command line."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion


class MqttUrlError(ValueError):
    """An MQTT URL is malformed; the message shows it."""


@dataclass(frozen=True, slots=True)
class MqttTarget:
    """Where a broker is and how to log in to it."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> MqttTarget:
    """Parse ``mqtt://[user:password@]host[:port]``."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise MqttUrlError(f"MQTT URL {url!r} must look like mqtt://host:port")
    try:
        port = parts.port or 1883
    except ValueError as exc:
        raise MqttUrlError(f"MQTT URL {url!r} has a bad port") from exc
    return MqttTarget(
        host=parts.hostname,
        port=port,
        username=None if parts.username is None else unquote(parts.username),
        password=None if parts.password is None else unquote(parts.password),
    )


def protocol_of(version: int) -> MQTTProtocolVersion:
    """MQTT 5 (5) or MQTT 3.1.1 (4)."""
    if version == 5:
        return mqtt.MQTTv5
    if version == 4:
        return mqtt.MQTTv311
    raise MqttUrlError(f"MQTT protocol {version} is not supported; use 5 or 4 (3.1.1)")


def new_client(client_id: str, *, protocol: int, persistent: bool = False) -> mqtt.Client:
    """A paho client with the v2 callback API; ``persistent`` keeps the session (3.1.1)."""
    proto = protocol_of(protocol)
    if proto == mqtt.MQTTv5:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
    else:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto,
            clean_session=not persistent,
        )
    client.on_socket_open = _no_delay
    return client


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    # MQTT packets are small and often written back to back (a reply, then a PUBACK). With
    # Nagle's algorithm the second waits for the peer's delayed ACK, some 40 ms on Linux:
    # longer than an alarm may take end to end. paho leaves Nagle on, so turn it off here.
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
