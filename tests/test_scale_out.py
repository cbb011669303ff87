"""Two `aidlink gateway` processes on one shared subscription, on a real Mosquitto 2 and a
real PostgreSQL: every reading stored once, both processes busy, and a killed member's
messages kept by the broker until that member comes back."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from click.testing import CliRunner
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.cli import main
from gateway.mqtt import new_client, parse_mqtt_url
from gateway.services.mosquitto import MosquittoProcess
from gateway.services.postgres import find_free_port
from provisioning import service
from simulators.bpm import BpReading, encode
from tests.support import SECRET, count, seed, wait_for

# One blood-pressure reading is stored as four observations (three pressures and the pulse).
ROWS_PER_READING = 4


@dataclass(frozen=True)
class Source:
    """A hub and the cuff whose readings it forwards."""

    hub: str
    cuff: str


def fleet_of_four(url: str) -> list[Source]:
    """The test fleet plus two more cuffs on the first hub: four measuring devices."""
    fleet = seed(url)
    sources = [Source(fleet.hub, fleet.cuff), Source(fleet.other_hub, fleet.other_cuff)]
    with psycopg.connect(url) as conn:
        for number in (1, 2):
            cuff = service.onboard_device(conn, principal="20", model="bpm",
                                          serial=f"S{number}", actor="t")
            service.pair(conn, peripheral_id=cuff["device_id"], hub_id=fleet.hub, actor="t")
            service.assign(conn, SECRET, device_id=cuff["device_id"],
                           patient=f"scale-patient-{number}", basis="HSL", actor="t")
            conn.execute("UPDATE assignments SET valid_from = now() - interval '30 days'"
                         " WHERE device_id = %s", (cuff["device_id"],))
            sources.append(Source(fleet.hub, cuff["device_id"]))
    return sources


def reading(at: datetime, number: int) -> bytes:
    """A blood-pressure reading measured at ``at``."""
    return encode(BpReading(systolic=Decimal(110 + number % 40), diastolic=Decimal(80),
                            mean=Decimal(90), pulse=Decimal(60 + number % 30), measured_at=at,
                            user_id=1, status=0))


class Publisher:
    """Hubs publishing QoS 1 readings without waiting for each acknowledgement."""

    def __init__(self, mqtt_url: str, sources: Sequence[Source]) -> None:
        self._sources = sources
        self._clients: dict[str, mqtt.Client] = {}
        self._pending: list[mqtt.MQTTMessageInfo] = []
        target = parse_mqtt_url(mqtt_url)
        for hub in {s.hub for s in sources}:
            client = new_client(hub, protocol=5)
            client.max_inflight_messages_set(200)
            client.connect(target.host, target.port)
            client.loop_start()
            self._clients[hub] = client
        self.sent = 0
        self._base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)

    def publish(self, readings: int, per_second: float = 0.0) -> None:
        """Send ``readings`` more, round robin over the devices, at most ``per_second``."""
        started = time.monotonic()
        for _ in range(readings):
            source = self._sources[self.sent % len(self._sources)]
            # One second apart per device: every reading has its own natural key.
            at = self._base + timedelta(seconds=self.sent // len(self._sources))
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = [("seq", str(self.sent + 1))]
            self._pending.append(self._clients[source.hub].publish(
                f"aidlink/v1/{source.hub}/{source.cuff}/ble/2a35",
                reading(at, self.sent), qos=1, properties=props))
            self.sent += 1
            if per_second:
                ahead = self.sent / per_second - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)

    def wait_acknowledged(self, timeout: float = 30.0) -> None:
        """Block until the broker has acknowledged everything sent."""
        for info in self._pending:
            info.wait_for_publish(timeout)
            assert info.is_published(), f"the broker did not take message {info.mid}"
        self._pending.clear()

    def close(self) -> None:
        """Disconnect every hub."""
        for client in self._clients.values():
            client.disconnect()
            client.loop_stop()


def aidlink_executable() -> str:
    """The `aidlink` entry point of the interpreter running the tests."""
    beside = Path(sys.executable).parent / "aidlink"
    found = str(beside) if beside.exists() else shutil.which("aidlink")
    if found is None:
        pytest.fail("the aidlink command is not installed (pip install -e .)")
    return found


class GatewayProcess:
    """`aidlink gateway --share ingest` as a child process with its health port."""

    def __init__(self, database_url: str, mqtt_url: str, client_id: str, log_dir: Path,
                 *, extra_env: dict[str, str] | None = None) -> None:
        self.client_id = client_id
        self.health_port = find_free_port()
        self._log_path = log_dir / f"{client_id}.log"
        self._env = {**os.environ, "AIDLINK_DATABASE_URL": database_url,
                     "AIDLINK_MQTT_URL": mqtt_url, "AIDLINK_SECRET": SECRET.decode(),
                     **(extra_env or {})}
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process and wait until it is subscribed and healthy."""
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [aidlink_executable(), "gateway", "--share", "ingest", "--client-id",
                 self.client_id, "--health-port", str(self.health_port)],
                env=self._env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.health(allow_down=True).get("connected"), timeout=20,
                 what=f"gateway {self.client_id} connected ({self.log_tail()})")

    def health(self, *, allow_down: bool = False) -> dict[str, Any]:
        """The body of /healthz (whatever its status)."""
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}/healthz", timeout=5) as response:
                body: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.load(error)
            body["http_status"] = error.code
            return body
        except OSError:
            if not allow_down:
                raise
            return {}
        body["http_status"] = response.status
        return body

    def metric(self, name: str, labels: str = "") -> float:
        """One sample of /metrics, 0 when the process has not counted it yet."""
        with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        pattern = rf"^{re.escape(name + labels)} (\S+)$"
        match = re.search(pattern, text, flags=re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def stored_messages(self) -> int:
        """Messages this process committed (a redelivered one counts again)."""
        return int(self.metric("aidlink_ingest_messages_total", '{result="stored"}'))

    def kill(self) -> None:
        """SIGKILL, as in a crash: nothing is flushed or acknowledged on the way out."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL if it does not go."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self) -> str:
        """The end of the process's log, for failure messages."""
        if not self._log_path.exists():
            return "no log"
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-15:])


@pytest.fixture
def sources(database_url: str) -> list[Source]:
    """A migrated database with four measuring devices."""
    return fleet_of_four(database_url)


@pytest.fixture
def gateways(database_url: str, mosquitto: MosquittoProcess, sources: list[Source],
             tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    """Two gateway processes, gw-1 and gw-2, in the shared group ``ingest``."""
    members = [GatewayProcess(database_url, mosquitto.url, f"gw-{n}", tmp_path) for n in (1, 2)]
    try:
        for member in members:
            member.start()
        yield members
    finally:
        for member in members:
            member.stop()


def readings_stored(url: str) -> int:
    """Distinct readings (device and time) stored."""
    return count(url, "SELECT count(*) FROM (SELECT DISTINCT device_id, ts FROM observations) r")


def settled_health(member: GatewayProcess) -> dict[str, Any] | None:
    """The member's health once nothing is in flight there, else None."""
    health = member.health()
    return health if health["in_flight"] == 0 else None


def assert_each_reading_once(url: str, sources: Sequence[Source], total: int) -> None:
    """Every device has its share of readings, each with all its rows and none twice."""
    per_device = total // len(sources)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT device_id, count(DISTINCT ts), count(*) FROM observations GROUP BY device_id"
        ).fetchall()
    found = {device: (readings, observations) for device, readings, observations in rows}
    expected = {s.cuff: (per_device, per_device * ROWS_PER_READING) for s in sources}
    assert found == expected


def test_two_gateways_on_one_shared_subscription_store_every_reading_once(
        database_url: str, mosquitto: MosquittoProcess, sources: list[Source],
        gateways: list[GatewayProcess]) -> None:
    publisher = Publisher(mosquitto.url, sources)
    try:
        publisher.publish(2000, per_second=1000)
        publisher.wait_acknowledged()
    finally:
        publisher.close()
    wait_for(lambda: readings_stored(database_url) == 2000, timeout=60,
             what="2000 readings stored")
    assert_each_reading_once(database_url, sources, 2000)
    shares = [member.stored_messages() for member in gateways]
    # Each message went to exactly one member: the processes' counts add up to the total.
    assert sum(shares) == 2000, shares
    # Mosquitto hands a shared subscription's messages to its members in turn, so an even
    # split is expected; 20 % leaves room for timing while failing a member left idle.
    assert min(shares) >= 400, shares
    for member in gateways:
        # Acknowledgement follows the commit, so the in-flight count may lag the rows a moment.
        health = wait_for(partial(settled_health, member), what="nothing in flight at the member")
        assert health["http_status"] == 200, health
        assert health["subscription"] == "$share/ingest/aidlink/v1/+/+/#"
        assert health["in_flight"] == 0, health


def test_a_killed_members_messages_wait_in_its_session_until_it_returns(
        database_url: str, mosquitto: MosquittoProcess, sources: list[Source],
        gateways: list[GatewayProcess]) -> None:
    survivor, victim = gateways
    publisher = Publisher(mosquitto.url, sources)
    try:
        publisher.publish(1000, per_second=1000)
        victim.kill()
        before_kill = readings_stored(database_url)
        survivor_before = survivor.stored_messages()
        publisher.publish(1000, per_second=1000)
        publisher.wait_acknowledged()
    finally:
        publisher.close()
    # Mosquitto 2.0 keeps choosing the dead member in turn: its persistent session holds
    # its unacknowledged and newly assigned messages, and no other member gets them.
    survivor_done = wait_for(lambda: _settled(database_url), timeout=60,
                             what="ingestion to settle with one member")
    assert survivor.stored_messages() > survivor_before + 300, (
        "the survivor did not keep its share after the kill")
    held = 2000 - survivor_done
    assert held > 300, f"only {held} readings held for the dead member ({before_kill} before)"
    # Back with the same client id, the member resumes its session and gets every one.
    victim.start()
    wait_for(lambda: readings_stored(database_url) == 2000, timeout=60,
             what=f"the {held} held readings delivered to the returning member")
    assert_each_reading_once(database_url, sources, 2000)
    assert victim.stored_messages() >= held
    assert victim.health()["http_status"] == 200


def _settled(url: str) -> int | None:
    """The stored count once it stays the same for two seconds."""
    first = readings_stored(url)
    time.sleep(2)
    return first if readings_stored(url) == first else None


def test_a_taken_health_port_is_refused_naming_it(database_url: str,
                                                  mosquitto: MosquittoProcess) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            main, ["gateway", "--share", "ingest", "--health-port", str(port)],
            env={"AIDLINK_DATABASE_URL": database_url, "AIDLINK_MQTT_URL": mosquitto.url,
                 "AIDLINK_SECRET": SECRET.decode()})
    assert result.exit_code == 1
    assert f"aidlink: health port {port} on 127.0.0.1 is not available" in result.output
