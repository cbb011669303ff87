"""A sequence-numbered fleet for fault injection, the gateway as a process, and the checker.

Every device is its own MQTT client and publishes blood pressure readings (0x2A35) whose
device time is ``BASE + seq`` seconds, so the stored ``ts`` gives (device, seq) back. All
clients run on one thread around one selector (paho's external-loop API), which keeps a
thousand clients cheap. They use QoS 1, MQTT 5 with a persistent session, the ``seq`` user
property as hubs send it, and keep every publish the broker has not acknowledged: paho resends
those after each reconnect. What the broker PUBACKed is recorded per device; that is what the
gateway must have stored.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import psutil
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway import db
from gateway.mqtt import new_client, parse_mqtt_url
from provisioning import service
from simulators.bpm import BpReading, encode
from tests.support import SECRET

# A winter date: no daylight-saving change within the few hours of seconds a run uses, so
# local device time maps back to one UTC moment.
BASE = datetime(2025, 1, 6, tzinfo=UTC)
ZONE = ZoneInfo("Europe/Stockholm")
PRINCIPAL = "2080"  # mutual-TLS policy: onboarding makes no password hash, so it is quick
SYSTOLIC = "8480-6"
CODES_PER_READING = 3  # systolic, diastolic, mean
_NO_SUBSCRIBERS = 0x10


def onboard_fleet(url: str, count: int) -> list[str]:
    """Migrate ``url`` and onboard ``count`` cuffs, each its own MQTT client."""
    db.migrate(url)
    with psycopg.connect(url) as conn:
        service.add_principal(conn, PRINCIPAL, "Falun")
        return [service.onboard_device(conn, principal=PRINCIPAL, model="bpm",
                                       serial=f"F{i:05d}", actor="fault-suite")["device_id"]
                for i in range(count)]


def payload(seq: int) -> bytes:
    """The reading numbered ``seq``: its device time is BASE + seq seconds."""
    reading = BpReading(systolic=Decimal(120 + seq % 40), diastolic=Decimal(80),
                        mean=Decimal(93), measured_at=BASE + timedelta(seconds=seq))
    return encode(reading, ZONE)


@dataclass(slots=True)
class Device:
    """One publishing client and what became of its publishes."""

    device_id: str
    client: mqtt.Client
    sent: int = 0
    acked: set[int] = field(default_factory=set)
    # When each PUBACK arrived (time.time()), to measure how old lost readings were.
    acked_at: dict[int, float] = field(default_factory=dict)
    refused: set[int] = field(default_factory=set)
    mids: dict[int, int] = field(default_factory=dict)
    connected: bool = False
    retry_at: float = 0.0
    connects: int = 0


class FleetDriver:
    """Many paho clients on one thread; every call from other threads is queued to it."""

    def __init__(self, mqtt_url: str, device_ids: list[str], *, keepalive: int = 60) -> None:
        self._target = parse_mqtt_url(mqtt_url)
        self._selector = selectors.DefaultSelector()
        self._commands: queue.Queue[Callable[[], object]] = queue.Queue()
        self._stop = threading.Event()
        self._rng = random.Random(7)
        self._keepalive = keepalive
        self._backlog: list[Device] = []
        self._rate = 0.0
        self._lock = threading.Lock()
        self.devices = [self._device(d) for d in device_ids]
        self._thread = threading.Thread(target=self._run, name="fault-fleet", daemon=True)

    # -- from the test thread -------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        """Connect every client and wait until all are connected."""
        self._thread.start()
        def connect_all() -> None:
            for device in self.devices:
                self._connect(device)
        self._call(connect_all)
        self.wait(lambda: all(d.connected for d in self.devices), timeout, "every client up")

    def publish(self, rounds: int, rate: float) -> None:
        """Queue ``rounds`` readings per device, sent round-robin at ``rate`` messages/s."""
        def schedule() -> None:
            self._backlog.extend(self.devices * rounds)
            self._rate = rate
        self._call(schedule)

    def drop_all(self) -> None:
        """Cut every connection at once, as a network outage does; all reconnect together."""
        def cut() -> None:
            for device in self.devices:
                sock = device.client.socket()
                if isinstance(sock, socket.socket):
                    sock.shutdown(socket.SHUT_RDWR)
        self._call(cut)

    def wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``check`` (under the fleet's lock) until true; fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if check():
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"fleet: timed out after {timeout}s waiting for {what}"
                                     f" ({self.summary()})")
            time.sleep(0.05)

    def wait_sent(self, timeout: float) -> None:
        """Until every queued reading has been handed to paho."""
        self.wait(lambda: not self._backlog, timeout, "all readings sent")

    def wait_acked(self, timeout: float) -> None:
        """Until the broker has acknowledged (or refused) every reading sent."""
        self.wait(lambda: not self._backlog and all(
            len(d.acked) + len(d.refused) == d.sent for d in self.devices),
            timeout, "every PUBACK")

    def sent_total(self) -> int:
        """Readings handed to paho so far."""
        with self._lock:
            return sum(d.sent for d in self.devices)

    def acked(self) -> dict[str, set[int]]:
        """Per device, the numbers the broker PUBACKed with success."""
        with self._lock:
            return {d.device_id: set(d.acked) for d in self.devices}

    def summary(self) -> str:
        """Counts for failure messages and reports."""
        sent = sum(d.sent for d in self.devices)
        acked = sum(len(d.acked) for d in self.devices)
        refused = sum(len(d.refused) for d in self.devices)
        up = sum(d.connected for d in self.devices)
        return (f"{len(self.devices)} devices, {up} connected, {sent} sent, {acked} acked,"
                f" {refused} refused, {len(self._backlog)} queued")

    def close(self) -> None:
        """Disconnect all and stop the thread."""
        def disconnect_all() -> None:
            for device in self.devices:
                device.client.disconnect()
        self._call(disconnect_all)
        time.sleep(0.2)
        self._stop.set()
        self._thread.join(timeout=10)
        for device in self.devices:
            sock = device.client.socket()
            if isinstance(sock, socket.socket):
                sock.close()
        self._selector.close()

    # -- on the fleet thread ----------------------------------------------------------------
    def _call(self, command: Callable[[], object]) -> None:
        self._commands.put(command)

    def _device(self, device_id: str) -> Device:
        client = new_client(device_id, protocol=5)
        device = Device(device_id, client)
        client.on_socket_open = self._opened
        client.on_socket_close = self._closed
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._done_writing
        client.on_connect = lambda c, u, f, rc, p: self._on_connect(device, rc)
        client.on_disconnect = lambda c, u, f, rc, p: self._on_disconnect(device)
        client.on_publish = lambda c, u, mid, rc, p: self._on_publish(device, mid, rc)
        return device

    def _connect(self, device: Device) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        try:
            if device.connects == 0:
                device.client.connect(self._target.host, self._target.port,
                                      keepalive=self._keepalive, clean_start=False,
                                      properties=props)
            else:
                device.client.reconnect()
        except OSError:
            device.retry_at = time.monotonic() + 0.25
            return
        device.connects += 1
        device.retry_at = float("inf")

    def _opened(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._selector.register(sock, selectors.EVENT_READ, client)

    def _closed(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def _want_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def _done_writing(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(sock, selectors.EVENT_READ, client)

    def _on_connect(self, device: Device, reason: Any) -> None:
        if reason.is_failure:
            raise AssertionError(f"broker refused {device.device_id}: {reason}")
        with self._lock:
            device.connected = True

    def _on_disconnect(self, device: Device) -> None:
        with self._lock:
            device.connected = False
        # Every client comes back within 50 ms: a thundering herd, as after an outage.
        device.retry_at = time.monotonic() + self._rng.uniform(0.0, 0.05)

    def _on_publish(self, device: Device, mid: int, reason: Any) -> None:
        seq = device.mids.pop(mid, None)
        if seq is None:
            return
        # "No matching subscribers" (16) is a success code, but nobody will get the message:
        # count it as refused so a test that published too early fails rather than reports loss.
        routed = not reason.is_failure and reason.value != _NO_SUBSCRIBERS
        with self._lock:
            (device.acked if routed else device.refused).add(seq)
            device.acked_at[seq] = time.time()

    def _send(self, device: Device) -> None:
        seq = device.sent + 1
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = [("seq", str(seq))]
        topic = f"aidlink/v1/{device.device_id}/{device.device_id}/ble/2a35"
        info = device.client.publish(topic, payload(seq), qos=1, properties=props)
        # Queued by paho whether or not the client is connected: it resends after reconnect.
        device.mids[info.mid] = seq
        with self._lock:
            device.sent = seq

    def _run(self) -> None:
        next_misc = 0.0
        budget, last = 0.0, time.monotonic()
        while not self._stop.is_set():
            while True:
                try:
                    self._commands.get_nowait()()
                except queue.Empty:
                    break
            now = time.monotonic()
            budget = min(budget + (now - last) * self._rate, max(self._rate * 0.1, 1.0))
            last = now
            while self._backlog and budget >= 1:
                self._send(self._backlog.pop(0))
                budget -= 1
            for key, events in self._selector.select(timeout=0.005):
                client: mqtt.Client = key.data
                if events & selectors.EVENT_READ:
                    client.loop_read()
                if events & selectors.EVENT_WRITE and client.socket() is not None:
                    client.loop_write()
            if now >= next_misc:
                next_misc = now + 0.1
                for device in self.devices:
                    if device.connected:
                        device.client.loop_misc()
                    elif device.retry_at <= now and device.client.socket() is None:
                        self._connect(device)


class GatewayProcess:
    """``aidlink gateway`` as its own process, so a test can SIGKILL it."""

    def __init__(self, database_url: str, mqtt_url: str, workdir: Path,
                 **env: str) -> None:
        self._env = {**os.environ, "AIDLINK_DATABASE_URL": database_url,
                     "AIDLINK_MQTT_URL": mqtt_url, "AIDLINK_SECRET": SECRET.decode(),
                     "AIDLINK_HOME": str(workdir / "home"), **env}
        self._log_path = workdir / "gateway.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The running process's id."""
        assert self._process is not None, "gateway process not started"
        return self._process.pid

    def start(self, *, wait: bool = True) -> None:
        """Start it; with ``wait``, until it has connected and subscribed."""
        offset = self._log_path.stat().st_size if self._log_path.exists() else 0
        command = [str(Path(sys.executable).with_name("aidlink")), "gateway"]
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(command, env=self._env, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while wait and b" running (subscription" not in self._log_path.read_bytes()[offset:]:
            if time.monotonic() > deadline or self._process.poll() is not None:
                raise AssertionError(f"gateway did not come up; log:\n{self.log_tail()}")
            time.sleep(0.05)
        # It logs once connected; the SUBACK follows within milliseconds. Until then the
        # broker would route nothing (a first start has no session yet).
        time.sleep(0.3 if wait else 0)

    def kill(self) -> None:
        """SIGKILL: no batch finished, no acknowledgement sent."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL if it does not exit."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise AssertionError(
                f"gateway ignored SIGTERM for 20 s; log:\n{self.log_tail()}") from exc

    def rss(self) -> int:
        """Resident memory of the process, in bytes."""
        return int(psutil.Process(self.pid).memory_info().rss)

    def log_tail(self, lines: int = 30) -> str:
        """The end of its log, for failure messages."""
        text = self._log_path.read_text(errors="replace") if self._log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
