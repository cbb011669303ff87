"""The load side of ``aidlink bench ingest``: the fleet, a lean MQTT 5 publisher, a subscriber.

- ``register_fleet`` onboards blood pressure monitors through the provisioning service and
  assigns each to a patient, so the registry is exactly what the gateway resolves in production.
  Each monitor is its own MQTT client (``client_id`` = device id) publishing for itself.
- ``publish`` runs in a child process and speaks MQTT 5 over plain sockets: paho's per-message
  Python work (the subscriber of the ceiling phase uses most of a core at some 5,000 messages/s)
  would make the publisher, not the broker, the ceiling, and in ``aidlink bench api`` (which
  publishes its live load with it too, through hubs) would take the CPU measured. Every
  message is a QoS 1 PUBLISH of a real 0x2A35 payload with the MQTT 5 user property
  ``received-at`` set to the moment it is written to the socket; the gateway stores that
  moment as the observation's time, so the store itself says when each reading was
  published. At most ``WINDOW`` messages per connection wait for the broker's PUBACK.
- ``subscribe`` is the plain consumer of the ceiling phase: a paho client at QoS 1, as the
  gateway subscribes, counting what it receives.
"""

from __future__ import annotations

import multiprocessing.synchronize
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.model import DecodeContext, Observation
from adapters.registry import decode
from gateway.ingest.topics import SUBSCRIPTION
from gateway.mqtt import new_client
from provisioning import service
from simulators import bpm

PRINCIPAL = "20"
CHANNEL = "ble/2a35"
SYSTOLIC = "8480-6"
# Unacknowledged QoS 1 messages per connection: far below Mosquitto's receive maximum, and
# with 1,000 connections still some 20,000 messages on their way.
WINDOW = 20
Say = Callable[[str], None]

_PUBACK = 4
_NO_MATCHING_SUBSCRIBERS = 0x10
_DISCONNECT = 14
# User property ``received-at`` with an RFC 3339 UTC value of fixed width (27 characters).
_STAMP_LEN = 27
_PROPERTY = b"\x26\x00\x0breceived-at\x00" + bytes([_STAMP_LEN])
_PROPERTIES_LEN = len(_PROPERTY) + _STAMP_LEN


def register_fleet(url: str, secret: bytes, devices: int, say: Say) -> list[str]:
    """Onboard ``devices`` blood pressure monitors of one principal, each at a patient."""
    started = time.perf_counter()
    ids = []
    with psycopg.connect(url) as conn:
        service.add_principal(conn, PRINCIPAL, "Region Dalarna")
        for n in range(devices):
            device = service.onboard_device(conn, principal=PRINCIPAL, model="sim-bpm",
                                            serial=f"bench-ingest-{n:05d}", actor="bench")
            service.assign(conn, secret, device_id=device["device_id"],
                           patient=f"ingest-{n:05d}", basis="HSL", actor="bench")
            ids.append(str(device["client_id"]))
            if n % 250 == 249:
                conn.commit()
                say(f"registered {n + 1:,} of {devices:,} devices")
    say(f"registered {devices:,} devices in {time.perf_counter() - started:.1f} s")
    return ids


def payloads(count: int) -> list[bytes]:
    """Valid 0x2A35 payloads without the cuff's time stamp: the gateway then times each
    reading by its ``received-at`` property, the publish moment (microseconds), so a monitor
    publishing many readings a second never repeats the natural key (device, code, time)."""
    cuff = bpm.BloodPressureMonitor(seed=11)
    now = datetime.now(UTC)
    return [bpm.encode(replace(cuff.measure(now), measured_at=None)) for _ in range(count)]


def rows_per_reading(pool: list[bytes]) -> float:
    """Observation rows one payload of ``pool`` makes on average, decoded by the adapter."""
    rows = [sum(isinstance(r, Observation) for r in decode(CHANNEL, p, DecodeContext()))
            for p in pool]
    return sum(rows) / len(rows)


@dataclass(slots=True)
class Control:
    """What the bench and the publisher processes share (all process-safe)."""

    stop: multiprocessing.synchronize.Event
    # Readings a second asked of all publishers together; 0 = as fast as the broker takes them.
    rate: Any
    # Non-zero: publish nothing for now (the consumer's backlog is at its bound).
    paused: Any
    # Per publisher process: messages written to the broker, and PUBACKs received.
    published: Any
    acked: Any
    # Per publisher process: PUBACKs saying "no matching subscribers" (MQTT 5 reason 0x10):
    # the broker took the message and had no one to give it to.
    unrouted: Any


class PublisherError(RuntimeError):
    """The broker refused or dropped a publisher connection; the message says which."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


# A client id and the topics it publishes on in turn: a device publishing for itself has one,
# a hub one per device paired with it.
Sender = tuple[str, list[str]]


def device_topic(client_id: str) -> str:
    """The topic of a device publishing its own readings."""
    return f"aidlink/v1/{client_id}/{client_id}/{CHANNEL}"


class _Connection:
    """One client's MQTT 5 connection: its topics, packet ids and unacknowledged count."""

    __slots__ = ("acked", "buffer", "client_id", "inflight", "last_us", "pid", "sock", "topics",
                 "turn", "unrouted")

    def __init__(self, host: str, port: int, client_id: str, topics: list[str]) -> None:
        self.client_id = client_id
        self.topics = [_string(topic) for topic in topics]
        self.turn = 0
        self.pid = 0
        self.inflight = 0
        self.acked = 0
        self.unrouted = 0
        self.last_us = 0
        self.buffer = b""
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Protocol MQTT level 5, clean start, keep-alive off, no properties.
        body = _string("MQTT") + b"\x05\x02\x00\x00\x00" + _string(client_id)
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
        head = self._read_exactly(2)
        rest = self._read_exactly(head[1]) if head[1] < 128 else b""
        if head[0] != 0x20 or len(rest) < 2 or rest[1] != 0:
            raise PublisherError(f"broker {host}:{port} refused device {client_id}: CONNACK "
                                 f"{(head + rest).hex()}")

    def _read_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise PublisherError(f"broker closed the connection of device {self.client_id}")
            data += chunk
        return data

    def packet(self, payload: bytes, stamp: bytes) -> bytes:
        """A QoS 1 PUBLISH of ``payload`` with ``received-at`` = ``stamp``."""
        self.pid = self.pid % 65535 + 1
        topic = self.topics[self.turn]
        self.turn = (self.turn + 1) % len(self.topics)
        body_len = len(topic) + 2 + 1 + _PROPERTIES_LEN + len(payload)
        return b"".join((b"\x32", _varint(body_len), topic, self.pid.to_bytes(2, "big"),
                         bytes([_PROPERTIES_LEN]), _PROPERTY, stamp, payload))

    def read_acks(self) -> None:
        """Take what the broker sent: count PUBACKs, fail on anything else."""
        data = self.sock.recv(65536)
        if not data:
            raise PublisherError(f"broker closed the connection of device {self.client_id}")
        buf = self.buffer + data
        at = 0
        while len(buf) - at >= 2:
            kind, length = buf[at] >> 4, buf[at + 1]
            if length >= 128:  # a PUBACK is never this long
                raise PublisherError(f"unexpected {length}+ byte packet type {kind} from the"
                                     f" broker on device {self.client_id}")
            if len(buf) - at < 2 + length:
                break
            if kind != _PUBACK:
                reason = buf[at + 2] if kind == _DISCONNECT and length else None
                raise PublisherError(f"broker sent packet type {kind} (reason {reason}) to "
                                     f"device {self.client_id} instead of a PUBACK")
            # PUBACK body: packet id (2 bytes), then in MQTT 5 an optional reason code.
            reason = buf[at + 4] if length >= 3 else 0
            if reason >= 0x80:
                raise PublisherError(f"broker refused a PUBLISH of device {self.client_id}:"
                                     f" reason 0x{reason:02x}")
            self.unrouted += reason == _NO_MATCHING_SUBSCRIBERS
            self.inflight -= 1
            self.acked += 1
            at += 2 + length
        self.buffer = buf[at:]


class _Clock:
    """RFC 3339 UTC stamps with microseconds, strictly increasing per connection."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""

    def stamp(self, conn: _Connection) -> bytes:
        micros = max(time.time_ns() // 1000, conn.last_us + 1)
        conn.last_us = micros
        second, fraction = divmod(micros, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)).encode()
        return self._prefix + b"%06dZ" % fraction


def publish(host: str, port: int, senders: list[Sender], pool: list[bytes], share: float,
            index: int, control: Control, ready: multiprocessing.synchronize.Event) -> None:
    """Publish for ``senders`` until ``control.stop``: ``share`` of ``control.rate`` a second
    (token bucket, at most 20 ms in hand), or flat out when the rate is 0. A child process."""
    conns = [_Connection(host, port, client_id, topics) for client_id, topics in senders]
    selector = selectors.DefaultSelector()
    for conn in conns:
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    clock = _Clock()
    sent, cursor, tokens, last = 0, 0, 0.0, time.monotonic()
    ready.set()
    while not control.stop.is_set():
        for key, _ in selector.select(0):
            key.data.read_acks()
        # Counted on every turn, paused or not: the bench waits between phases for every
        # written reading to be acknowledged.
        control.acked[index] = sum(c.acked for c in conns)
        control.unrouted[index] = sum(c.unrouted for c in conns)
        rate = control.rate.value * share
        now = time.monotonic()
        if control.paused.value:
            tokens, last = 0.0, now
            time.sleep(0.002)
            continue
        if rate > 0:
            tokens = min(max(1.0, rate * 0.02), tokens + (now - last) * rate)
            budget = int(tokens)
        else:
            budget = 4 * len(conns)
        last = now
        if budget < 1:
            time.sleep(0.001)
            continue
        done = 0
        for _ in range(len(conns)):
            if done >= budget:
                break
            conn = conns[cursor]
            cursor = (cursor + 1) % len(conns)
            room = min(WINDOW - conn.inflight, budget - done, 4)
            if room <= 0:
                continue
            conn.sock.sendall(b"".join(conn.packet(pool[(sent + j) % len(pool)],
                                                   clock.stamp(conn)) for j in range(room)))
            conn.inflight += room
            sent += room
            done += room
        tokens -= done
        control.published[index] = sent
        if done == 0:
            # Every window is full: wait for PUBACKs rather than spin.
            for key, _ in selector.select(0.005):
                key.data.read_acks()
    _close(conns, selector, control, index)


def _close(conns: list[_Connection], selector: selectors.BaseSelector, control: Control,
           index: int) -> None:
    deadline = time.monotonic() + 5
    while any(c.inflight for c in conns) and time.monotonic() < deadline:
        for key, _ in selector.select(0.05):
            key.data.read_acks()
    control.acked[index] = sum(c.acked for c in conns)
    control.unrouted[index] = sum(c.unrouted for c in conns)
    for conn in conns:
        conn.sock.sendall(b"\xe0\x00")  # DISCONNECT, normal
        conn.sock.close()


def subscribe(host: str, port: int, receive_maximum: int, received: Any,
              stop: multiprocessing.synchronize.Event,
              ready: multiprocessing.synchronize.Event, index: int = 0,
              group: str | None = None) -> None:
    """Count messages on the gateway's subscription at QoS 1 until ``stop``; with ``group``,
    as one member of that shared subscription, as the gateways run. A child process."""
    client = new_client(f"bench-ceiling-subscriber-{index}", protocol=5)
    subscribed = ready
    topic = SUBSCRIPTION if group is None else f"$share/{group}/{SUBSCRIPTION}"

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        c.subscribe(topic, qos=1)

    def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        subscribed.set()

    def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received.value += 1

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.ReceiveMaximum = receive_maximum
    client.connect(host, port, keepalive=30, clean_start=True, properties=props)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()
