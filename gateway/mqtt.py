"""MQTT connection details shared by the gateway, the simulators and the command line."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK, CallbackOnMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket

from gateway.mqtt_publish import decode_publish

# What one read from the socket may take. A QoS 1 reading is some 60-200 bytes on the wire,
# so one read carries hundreds of them.
_READ_CHUNK = 65536
_PUBACK = struct.Struct("!BBH")


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
        # PINGREQs sent and PINGRESPs received on this connection, and how many connections
        # have closed (see flushed()).
        self._pings = threading.Condition()
        self._pings_sent = self._pings_answered = self._closes = 0

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

    def _packet_read(self) -> MQTTErrorCode:
        # Every whole PUBLISH (QoS 0 or 1) already in the buffer is framed here, straight from
        # the bytes: paho would make one call for the header byte, one per byte of the
        # remaining length and one for the body, and build a fresh packet record for each.
        # Any other packet, or one cut off at the end of the buffer, is left to paho.
        if self._in_packet["command"] == 0:
            framed = False
            while (packet := self._whole_publish()) is not None:
                framed = True
                try:
                    rc = self._publish(*packet)
                except MalformedPacket as exc:
                    self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
                    rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return rc
            if framed:
                with self._msgtime_mutex:
                    self._last_bytes_received = mqtt.time_func()
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_read()

    def _whole_publish(self) -> tuple[int, bytes] | None:
        """The fixed header's first byte and the rest of the next packet in the buffer, taken
        out of it, when that packet is a whole PUBLISH of QoS 0 or 1.

        Fixed header (MQTT 3.1.1 and 5.0, §2.2): one byte of type (0x3_ for PUBLISH) and
        flags (DUP 0x08, QoS 0x06, RETAIN 0x01), then the remaining length as a Variable Byte
        Integer (7 bits a byte, low first, at most four bytes).
        """
        buf, pos = self._read_ahead, self._read_pos
        end = len(buf)
        if pos >= end or buf[pos] & 0xF6 not in (0x30, 0x32):
            return None
        length = shift = 0
        at = pos + 1
        while True:
            if at >= end or at - pos > 4:
                return None
            byte = buf[at]
            at += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        stop = at + length
        if stop > end:
            return None
        self._read_pos = stop
        return buf[pos], buf[at:stop]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and self._buffered():
            rc = super().loop_read(max_packets)
        return rc

    def _sock_close(self) -> None:
        self._read_ahead, self._read_pos = b"", 0
        with self._pings:
            self._pings_sent = self._pings_answered = 0
            self._closes += 1
            self._pings.notify_all()
        super()._sock_close()

    def flushed(self, timeout: float) -> bool:
        """Wait until the broker has read everything this client wrote so far; False if it
        did not say so within ``timeout`` (or the connection closed).

        Mosquitto discards what it has not yet read of a connection that closes, so PUBACKs
        written just before a DISCONNECT may never count, and the messages come again next
        session. A broker answers PINGREQs in the order it reads packets, so the PINGRESP to
        one sent now comes after everything written before it has been taken.
        """
        with self._pings:
            self._pings_sent += 1
            target, closes = self._pings_sent, self._closes
        # paho's own send: the override would count this PINGREQ a second time.
        if super()._send_pingreq() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        with self._pings:
            # Once the connection has closed, nothing more can be confirmed on it.
            return self._pings.wait_for(
                lambda: self._closes != closes or self._pings_answered >= target, timeout
            ) and self._closes == closes
    def _send_pingreq(self) -> MQTTErrorCode:
        # Counted before the packet is queued, so its answer can never be counted first.
        with self._pings:
            self._pings_sent += 1
        return super()._send_pingreq()

    def _handle_pingresp(self) -> MQTTErrorCode:
        rc = super()._handle_pingresp()
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            with self._pings:
                self._pings_answered += 1
                self._pings.notify_all()
        return rc

    def _handle_publish(self) -> MQTTErrorCode:
        # QoS 0 and 1 messages, all an aidlink client receives, are decoded by
        # gateway.mqtt_publish; paho keeps QoS 2, its state machine, and the invalid QoS 3.
        header = self._in_packet["command"]
        if header & 0x04:
            return super()._handle_publish()
        return self._publish(header, self._in_packet["packet"])

    def _publish(self, header: int, packet: bytes | bytearray) -> MQTTErrorCode:
        """Hand a received QoS 0 or 1 PUBLISH to ``on_message``; acknowledge it unless the
        application does (manual acknowledgement)."""
        message = decode_publish(header, packet, mqtt5=self._protocol == mqtt.MQTTv5)
        message.timestamp = time.monotonic()
        self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received PUBLISH (d%d, q%d, r%d, m%d), %r, (%d bytes)",
                       message.dup, message.qos, message.retain, message.mid, message._topic,
                       len(message.payload))
        self._handle_on_message(message)
        if message.qos == 1 and not self._manual_ack:
            return self._send_puback(message.mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_all(self, mids: Sequence[int]) -> MQTTErrorCode:
        """Acknowledge many QoS 1 messages (manual acknowledgement) in one write, in the
        order given. paho's ``ack`` queues each PUBACK on its own and wakes the network
        thread for each: hundreds of wake-ups for one committed batch.

        PUBACK (MQTT 3.1.1 §3.4, and 5.0 §3.4.2.1 when the reason is Success and there are
        no properties): 0x40, remaining length 2, the packet identifier big-endian.
        """
        if not self._manual_ack or not mids:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        wire = b"".join(_PUBACK.pack(0x40, 2, mid) for mid in mids)
        self._easy_log(mqtt.MQTT_LOG_DEBUG, "Sending %d PUBACKs (Mids: %d..%d)", len(mids),
                       mids[0], mids[-1])
        return self._packet_queue(PUBACK, wire, 0, 0)


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


def new_client(client_id: str, *, protocol: int, persistent: bool = False) -> BufferedClient:
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
