"""MQTT connection details shared by the gateway, the simulators and the command line."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.client import CallbackOnMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from gateway.mqtt_publish import decode_publish

# What one read from the socket may take. A QoS 1 reading is some 60-200 bytes on the wire,
# so one read carries hundreds of them.
_READ_CHUNK = 65536


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


class BufferedClient(mqtt.Client):
    """paho's client, reading the socket in large chunks instead of a few bytes at a time.

    paho reads each packet with at least three ``recv`` calls (the fixed header byte, the
    remaining length one byte at a time, then the body) and handles one packet per
    ``select``. At thousands of messages a second those system calls are most of the
    client's cost: draining 100,000 queued QoS 1 messages took 73-92 us of CPU per message
    with plain paho and 30 us with this class. Bytes read ahead are served from a buffer, and
    ``loop_read`` goes on until the buffer is empty, because ``select`` cannot see bytes that
    are already out of the socket. The buffer belongs to one connection and is dropped with it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_ahead = b""
        self._read_pos = 0
        self._topic_callbacks = False

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_pos >= len(self._read_ahead):
            data = super()._sock_recv(_READ_CHUNK)
            if len(data) <= bufsize:
                return data
            self._read_ahead, self._read_pos = data, 0
        start = self._read_pos
        self._read_pos = min(start + bufsize, len(self._read_ahead))
        return self._read_ahead[start:self._read_pos]

    def _buffered(self) -> bool:
        return self._read_pos < len(self._read_ahead)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and self._buffered():
            rc = super().loop_read(max_packets)
        return rc

    def _sock_close(self) -> None:
        self._read_ahead, self._read_pos = b"", 0
        super()._sock_close()

    def _handle_publish(self) -> MQTTErrorCode:
        # QoS 0 and 1 messages, all an aidlink client receives, are decoded by
        # gateway.mqtt_publish; paho keeps QoS 2, its state machine, and the invalid QoS 3.
        header = self._in_packet["command"]
        if header & 0x04:
            return super()._handle_publish()
        message = decode_publish(header, self._in_packet["packet"],
                                 mqtt5=self._protocol == mqtt.MQTTv5)
        message.timestamp = time.monotonic()
        self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received PUBLISH (d%d, q%d, r%d, m%d), %r, (%d bytes)",
                       message.dup, message.qos, message.retain, message.mid, message._topic,
                       len(message.payload))
        self._handle_on_message(message)
        if message.qos == 1 and not self._manual_ack:
            return self._send_puback(message.mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


    def message_callback_add(self, sub: str, callback: CallbackOnMessage) -> None:
        self._topic_callbacks = True
        super().message_callback_add(sub, callback)

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        # paho matches every message against the topic-specific callbacks, under a lock, even
        # when there are none: a tenth of the gateway's time. Without any, only on_message is
        # called, as paho calls it.
        if self._topic_callbacks:
            super()._handle_on_message(message)
            return
        with self._callback_mutex:
            on_message = self.on_message
        if on_message is None:
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise


def new_client(client_id: str, *, protocol: int, persistent: bool = False) -> mqtt.Client:
    """A paho client with the v2 callback API; ``persistent`` keeps the session (3.1.1)."""
    proto = protocol_of(protocol)
    if proto == mqtt.MQTTv5:
        client = BufferedClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
    else:
        client = BufferedClient(
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
