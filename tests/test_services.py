"""Tests for the PostgreSQL, mosquitto and embedded service wrappers, against real servers."""

import os
import pwd
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.services.embedded import start_embedded_postgres, start_inprocess_broker
from gateway.services.mosquitto import MosquittoError, MosquittoProcess
from gateway.services.postgres import (
    PostgresProcess,
    PostgresProcessError,
    find_free_port,
    find_postgres_bin_dir,
)
from tests.conftest import missing_component, require_mosquitto

TIMEOUT = 10.0



@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A directory under /tmp that a server dropped to another user can reach."""
    path = Path(tempfile.mkdtemp(prefix="aidlink-test-svc-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def own_pg(scratch_dir: Path) -> Iterator[PostgresProcess]:
    """A durable PostgreSQL server of the test's own, so it can be stopped and killed freely."""
    if find_postgres_bin_dir() is None:
        missing_component("PostgreSQL not installed: apt-get install postgresql")
    server = PostgresProcess(data_dir=scratch_dir / "data")
    try:
        yield server
    finally:
        server.stop(mode="immediate")


class MqttClient:
    """A paho client running its network loop in a thread and recording received messages."""

    def __init__(
        self,
        port: int,
        client_id: str,
        *,
        protocol: MQTTProtocolVersion = mqtt.MQTTv311,
        persistent: bool = False,
        manual_ack: bool = False,
    ) -> None:
        """Connect to 127.0.0.1:``port``; ``persistent`` keeps the session after disconnect."""
        self.payloads: list[bytes] = []
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        if protocol == mqtt.MQTTv5:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=protocol,
                manual_ack=manual_ack,
            )
        else:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=protocol,
                clean_session=not persistent,
                manual_ack=manual_ack,
            )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        if protocol == mqtt.MQTTv5:
            # paho's Properties constructor carries no type annotations.
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if persistent:
                properties.SessionExpiryInterval = 3600
            self.client.connect(
                "127.0.0.1", port, clean_start=not persistent, properties=properties
            )
        else:
            self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._connected.wait(TIMEOUT), f"{client_id} did not connect"

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not reason_code.is_failure:
            self._connected.set()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.payloads.append(bytes(message.payload))
            self._cond.notify_all()

    def subscribe(self, topic: str) -> None:
        """Subscribe with QoS 1 and wait for the SUBACK."""
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(TIMEOUT), "no SUBACK"

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish with QoS 1 and wait for the broker's PUBACK."""
        self.client.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT)

    def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[bytes]:
        """Wait until ``count`` messages arrived and return all received so far."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.payloads) >= count, timeout)
            return list(self.payloads)

    def close(self) -> None:
        """Disconnect cleanly and stop the network loop."""
        self.client.disconnect()
        self.client.loop_stop()


def _client_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_pg_server_fixture_runs_without_fsync(pg_server: PostgresProcess) -> None:
    with psycopg.connect(pg_server.url()) as conn:
        row = conn.execute(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit'),"
            " current_setting('full_page_writes'), current_setting('server_encoding')"
        ).fetchone()
    assert row == ("off", "off", "off", "UTF8")
    assert pg_server.url("x") == f"postgresql://postgres@127.0.0.1:{pg_server.port}/x"


def test_database_url_is_a_fresh_database(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT current_database(), count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert row is not None
    assert database_url.endswith(f"/{row[0]}")
    assert row[1] == 0


def test_database_url_teardown_restarts_a_stopped_server(
    database_url: str, pg_server: PostgresProcess
) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TABLE t (x int)")
    pg_server.stop()
    assert not pg_server.is_running()


def test_postgres_stop_start_keeps_data_and_port(own_pg: PostgresProcess) -> None:
    own_pg.start()
    port = own_pg.port
    with psycopg.connect(own_pg.url()) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")
        assert conn.execute("SELECT current_setting('fsync')").fetchone() == ("on",)
    own_pg.stop()
    assert not own_pg.is_running()
    own_pg.start()
    assert own_pg.is_running()
    assert own_pg.port == port
    with psycopg.connect(own_pg.url()) as conn:
        assert conn.execute("SELECT x FROM kept").fetchall() == [(42,)]
    own_pg.stop()
    # A new object for the same data dir reuses the last port when it is free.
    assert PostgresProcess(data_dir=own_pg.data_dir).port == port


def test_postgres_kill_then_start_recovers_committed_data(own_pg: PostgresProcess) -> None:
    own_pg.start()
    with psycopg.connect(own_pg.url()) as conn:
        conn.execute("CREATE TABLE crash (x int)")
        conn.execute("INSERT INTO crash VALUES (1)")
    own_pg.kill()
    assert not own_pg.is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(own_pg.url(), connect_timeout=2)
    own_pg.start()
    with psycopg.connect(own_pg.url()) as conn:
        assert conn.execute("SELECT x FROM crash").fetchall() == [(1,)]
    assert "database system was interrupted" in own_pg.log_path.read_text()


def test_postgres_create_and_drop_database(own_pg: PostgresProcess) -> None:
    own_pg.start()
    url = own_pg.create_database("made_here")
    holder = psycopg.connect(url)
    try:
        own_pg.drop_database("made_here")
    finally:
        holder.close()
    with psycopg.connect(own_pg.url()) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'made_here'").fetchone()
    assert exists is None


def test_postgres_start_failure_names_data_dir_and_shows_log(scratch_dir: Path) -> None:
    if find_postgres_bin_dir() is None:
        missing_component("PostgreSQL not installed: apt-get install postgresql")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        server = PostgresProcess(data_dir=scratch_dir / "data", port=taken, durable=False)
        with pytest.raises(PostgresProcessError) as caught:
            server.start()
    message = str(caught.value)
    assert str(scratch_dir / "data") in message
    assert "already in use" in message
    assert not server.is_running()


def test_mosquitto_config_has_durable_queue_settings(mosquitto: MosquittoProcess) -> None:
    config = mosquitto.config_path.read_text().splitlines()
    for line in (
        f"listener {mosquitto.port} 127.0.0.1",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {mosquitto.data_dir}/",
        "autosave_interval 1",
        "max_inflight_messages 1000",
        "max_queued_messages 0",
        "max_queued_bytes 0",
        "set_tcp_nodelay true",
    ):
        assert line in config
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    assert mosquitto.host == "127.0.0.1"


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
def test_mosquitto_queues_for_disconnected_persistent_session(
    mosquitto: MosquittoProcess, protocol: MQTTProtocolVersion
) -> None:
    sub_id = _client_id("sub")
    subscriber = MqttClient(mosquitto.port, sub_id, protocol=protocol, persistent=True)
    subscriber.subscribe("aid/+/reading")
    subscriber.close()

    publisher = MqttClient(mosquitto.port, _client_id("pub"))
    publisher.publish("aid/cuff-1/reading", b"while-away")
    publisher.close()

    subscriber = MqttClient(mosquitto.port, sub_id, protocol=protocol, persistent=True)
    try:
        assert subscriber.wait_for(1) == [b"while-away"]
    finally:
        subscriber.close()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
def test_mosquitto_queue_survives_graceful_restart(
    mosquitto: MosquittoProcess, protocol: MQTTProtocolVersion
) -> None:
    sub_id = _client_id("sub")
    subscriber = MqttClient(mosquitto.port, sub_id, protocol=protocol, persistent=True)
    subscriber.subscribe("aid/#")
    subscriber.close()
    publisher = MqttClient(mosquitto.port, _client_id("pub"))
    publisher.publish("aid/x", b"before-restart")
    publisher.close()

    port = mosquitto.port
    mosquitto.restart()
    assert mosquitto.port == port

    subscriber = MqttClient(mosquitto.port, sub_id, protocol=protocol, persistent=True)
    try:
        assert subscriber.wait_for(1) == [b"before-restart"]
    finally:
        subscriber.close()


def test_mosquitto_autosave_keeps_queue_across_kill(mosquitto: MosquittoProcess) -> None:
    sub_id = _client_id("sub")
    subscriber = MqttClient(mosquitto.port, sub_id, persistent=True)
    subscriber.subscribe("aid/#")
    subscriber.close()
    publisher = MqttClient(mosquitto.port, _client_id("pub"))
    publisher.publish("aid/x", b"autosaved")
    publisher.close()
    database = mosquitto.data_dir / "mosquitto.db"
    deadline = time.monotonic() + TIMEOUT
    # autosave_interval 1 should snapshot within about a second of the change. The log line
    # comes before the write; wait for the snapshot itself: mosquitto writes mosquitto.db.new
    # and renames it, so a mosquitto.db holding the payload and no .new file is a finished save.
    while not (database.exists() and b"autosaved" in database.read_bytes()
               and not database.with_name("mosquitto.db.new").exists()):
        assert time.monotonic() < deadline, "no autosave within the timeout"
        time.sleep(0.05)

    mosquitto.kill()
    assert not mosquitto.is_running()
    mosquitto.start()

    subscriber = MqttClient(mosquitto.port, sub_id, persistent=True)
    try:
        assert subscriber.wait_for(1) == [b"autosaved"]
    finally:
        subscriber.close()


def test_mosquitto_allows_more_than_20_unacknowledged_messages(
    mosquitto: MosquittoProcess,
) -> None:
    subscriber = MqttClient(mosquitto.port, _client_id("slow"), manual_ack=True)
    subscriber.subscribe("batch/#")
    publisher = MqttClient(mosquitto.port, _client_id("pub"))
    try:
        for i in range(100):
            publisher.publish("batch/x", str(i).encode())
        # Nothing is acknowledged, so mosquitto's default window would stop at 20.
        assert len(subscriber.wait_for(100)) == 100
    finally:
        publisher.close()
        subscriber.close()


def test_mosquitto_queue_is_not_capped_at_1000(mosquitto: MosquittoProcess) -> None:
    sub_id = _client_id("sub")
    subscriber = MqttClient(mosquitto.port, sub_id, persistent=True)
    subscriber.subscribe("bulk/#")
    subscriber.close()
    publisher = MqttClient(mosquitto.port, _client_id("pub"))
    try:
        infos = [publisher.client.publish("bulk/x", str(i), qos=1) for i in range(1500)]
        for info in infos:
            info.wait_for_publish(TIMEOUT)
    finally:
        publisher.close()

    subscriber = MqttClient(mosquitto.port, sub_id, persistent=True)
    try:
        received = subscriber.wait_for(1500)
    finally:
        subscriber.close()
    assert sorted(int(p) for p in received) == list(range(1500))


def test_mosquitto_start_failure_shows_log_tail(tmp_path: Path) -> None:
    require_mosquitto()
    broker = MosquittoProcess(data_dir=tmp_path / "bad", extra_config=["no_such_option 1"])
    with pytest.raises(MosquittoError, match="no_such_option"):
        broker.start()
    assert not broker.is_running()


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_mosquitto_drops_privileges_when_asked(scratch_dir: Path) -> None:
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        missing_component("no mosquitto system user: apt-get install mosquitto creates it")
    require_mosquitto()
    broker = MosquittoProcess(data_dir=scratch_dir / "mq", user="mosquitto")
    broker.start()
    try:
        assert broker.pid is not None
        owner = Path(f"/proc/{broker.pid}/status").read_text().split("Uid:")[1].split()[1]
        assert int(owner) == pwd.getpwnam("mosquitto").pw_uid
    finally:
        broker.stop()
    database = broker.data_dir / "mosquitto.db"
    assert database.stat().st_uid == pwd.getpwnam("mosquitto").pw_uid


def test_embedded_postgres_restart_reuses_data(scratch_dir: Path) -> None:
    home = scratch_dir / "home"
    url, stop = start_embedded_postgres(home)
    try:
        assert "/aidlink?host=" in url
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE kept (x text)")
            conn.execute("INSERT INTO kept VALUES ('still here')")
    finally:
        stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)

    url_again, stop_again = start_embedded_postgres(home)
    try:
        assert url_again == url
        with psycopg.connect(url_again) as conn:
            assert conn.execute("SELECT x FROM kept").fetchall() == [("still here",)]
    finally:
        stop_again()
        stop_again()


def test_inprocess_broker_qos1_pubsub() -> None:
    port = find_free_port()
    stop = start_inprocess_broker(port)
    try:
        subscriber = MqttClient(port, _client_id("sub"))
        subscriber.subscribe("aid/#")
        publisher = MqttClient(port, _client_id("pub"))
        publisher.publish("aid/cuff-1", b"hello")
        try:
            assert subscriber.wait_for(1) == [b"hello"]
        finally:
            publisher.close()
            subscriber.close()
    finally:
        stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
