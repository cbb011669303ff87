"""The gateway process: subscribe, batch, commit, and only then acknowledge.

Threads: paho's network loop puts each message on a queue; one writer thread collects a
batch (at most ``batch_max_rows`` messages or ``batch_max_delay`` after the first), commits
it and then acknowledges every message of it. The queue is bounded by the broker's in-flight
window: we ask for at most ``receive_maximum`` unacknowledged messages (MQTT 5 Receive
Maximum; Mosquitto's max_inflight_messages for 3.1.1), so memory stays flat whatever the
backlog. When the database fails, the batch is retried and nothing is acknowledged, so the
broker keeps the messages.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.ingest import metrics, supervision
from gateway.ingest.replies import PRIORITY_CHANNELS
from gateway.ingest.store import BatchResult, BatchStore, Incoming
from gateway.ingest.topics import SUBSCRIPTION
from gateway.mqtt import new_client, parse_mqtt_url

log = logging.getLogger(__name__)

SESSION_EXPIRY_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """How the gateway connects and batches."""

    database_url: str
    mqtt_url: str
    client_id: str = "aidlink-gateway"
    protocol: int = 5
    batch_max_rows: int = 500
    batch_max_delay: float = 0.1
    receive_maximum: int = 1000
    subscription: str = SUBSCRIPTION
    supervision_interval: float = 30.0


class Gateway:
    """Ingest from MQTT into PostgreSQL, acknowledging only committed messages."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._queue: queue.Queue[Incoming] = queue.Queue(maxsize=config.receive_maximum * 2)
        self._stop = threading.Event()
        self._generation = 0
        self._connected = threading.Event()
        self._db_ok = False
        self._db_error = ""
        self._last_commit: datetime | None = None
        self.totals = BatchResult()
        self._store: BatchStore | None = None
        target = parse_mqtt_url(config.mqtt_url)
        self._target = target
        self._client = new_client(config.client_id, protocol=config.protocol, persistent=True)
        self._client.manual_ack_set(True)
        if target.username is not None:
            self._client.username_pw_set(target.username, target.password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._writer = threading.Thread(target=self._write_loop, name="aidlink-writer", daemon=True)
        self._supervisor = threading.Thread(target=self._supervise, name="aidlink-supervisor",
                                            daemon=True)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Connect and start the network loop and the writer."""
        props = None
        kwargs: dict[str, Any] = {}
        if self.config.protocol == 5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
            props.ReceiveMaximum = self.config.receive_maximum
            kwargs["clean_start"] = False
        self._writer.start()
        self._supervisor.start()
        self._client.connect_async(
            self._target.host, self._target.port, keepalive=30, properties=props, **kwargs
        )
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        """Block until subscribed to the broker (or the timeout)."""
        return self._connected.wait(timeout)

    def stop(self) -> None:
        """Stop taking messages, finish the batch in hand, disconnect (session kept)."""
        self._stop.set()
        self._writer.join(timeout=10)
        self._supervisor.join(timeout=10)
        self._client.disconnect()
        self._client.loop_stop()

    def health(self) -> dict[str, Any]:
        """Whether ingestion works, and if not, why."""
        reasons = []
        if not self._connected.is_set():
            reasons.append("not connected to the MQTT broker")
        if not self._db_ok:
            reasons.append(f"database unavailable: {self._db_error}" if self._db_error
                           else "database not yet connected")
        return {
            "status": "ok" if not reasons else "degraded",
            "reasons": reasons,
            "queued": self._queue.qsize(),
            "last_commit": None if self._last_commit is None else self._last_commit.isoformat(),
        }

    def submit(self, topic: str, payload: bytes) -> Future[bool]:
        """Feed a message that did not come over MQTT (a DC-09 frame) into the same pipeline;
        the future resolves True once it is committed."""
        done: Future[bool] = Future()
        self._queue.put(Incoming(topic=topic, payload=payload, received_at=datetime.now(UTC),
                                 qos=0, done=done))
        return done

    # -- MQTT callbacks (paho's network thread) ---------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                    reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused the gateway: %s", reason_code)
            return
        # Acknowledgements carry packet ids of one connection; a new connection starts a new
        # generation and the writer drops acks of older ones (the broker redelivers those).
        self._generation += 1
        client.subscribe(self.config.subscription, qos=1)
        self._connected.set()
        log.info("gateway connected (session present: %s)", flags.session_present)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("gateway disconnected from broker: %s", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.put(Incoming(
            topic=msg.topic,
            payload=bytes(msg.payload),
            received_at=datetime.now(UTC),
            hub_received_at=_received_at_property(msg),
            mid=msg.mid,
            qos=msg.qos,
            generation=self._generation,
        ))

    # -- writer thread -------------------------------------------------------------------------
    def _write_loop(self) -> None:
        try:
            self._write_batches()
        finally:
            if self._store is not None:
                self._store.close()

    def _write_batches(self) -> None:
        store: BatchStore | None = None
        while not self._stop.is_set():
            batch = self._collect()
            if not batch:
                continue
            while True:
                try:
                    if store is None:
                        store = self._store = self._connect_store()
                    result = store.write_isolating(batch)
                    break
                except psycopg.OperationalError as exc:
                    metrics.DB_FAILURES.inc()
                    self._db_ok, self._db_error = False, str(exc).splitlines()[0]
                    log.warning("database write failed, batch kept unacknowledged: %s",
                                self._db_error)
                    if store is not None:
                        store.close()
                    store = self._store = None
                    if self._stop.wait(1.0):
                        return
            self._db_ok, self._db_error = True, ""
            self._last_commit = datetime.now(UTC)
            self._account(batch, result)
            for outbound in result.outbound:
                self._client.publish(outbound.topic, outbound.payload, qos=1)
            self._ack(batch)

    def _connect_store(self) -> BatchStore:
        conn = psycopg.connect(self.config.database_url, connect_timeout=5)
        return BatchStore(conn)

    def _collect(self) -> list[Incoming]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.config.batch_max_delay
        while len(batch) < self.config.batch_max_rows and not _urgent(batch[-1]):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _account(self, batch: Sequence[Incoming], result: BatchResult) -> None:
        self.totals.merge(result)
        now = datetime.now(UTC)
        for message in batch:
            metrics.INGEST_LATENCY.observe((now - message.received_at).total_seconds())
        metrics.BATCH_ROWS.observe(len(batch))
        metrics.INGEST_MESSAGES.labels("stored").inc(result.stored_messages)
        metrics.INGEST_MESSAGES.labels("ignored").inc(result.ignored)
        metrics.OBSERVATIONS_STORED.inc(result.observations_new)
        for reason, count in result.dead_letters.items():
            metrics.INGEST_MESSAGES.labels("dead_letter").inc(count)
            metrics.DEAD_LETTERS.labels(reason).inc(count)

    def _ack(self, batch: Sequence[Incoming]) -> None:
        for message in batch:
            if message.done is not None:
                message.done.set_result(True)
            elif message.qos > 0 and message.generation == self._generation:
                self._client.ack(message.mid, message.qos)

    # -- supervisor thread -----------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stop.wait(self.config.supervision_interval):
            try:
                with psycopg.connect(self.config.database_url, connect_timeout=5) as conn:
                    gone = supervision.sweep(conn, datetime.now(UTC))
            except psycopg.Error as exc:
                log.warning("supervision sweep failed: %s", str(exc).splitlines()[0])
                continue
            if gone:
                log.info("devices gone offline: %s", ", ".join(gone))


def _urgent(message: Incoming) -> bool:
    """An alarm: flush the batch now rather than wait for more messages."""
    return message.topic.rsplit("/", 1)[-1] in PRIORITY_CHANNELS


def _received_at_property(msg: mqtt.MQTTMessage) -> datetime | None:
    """The hub's ``received-at`` MQTT 5 user property (RFC 3339), when present and valid."""
    props = getattr(msg, "properties", None)
    pairs = getattr(props, "UserProperty", None) or []
    for key, value in pairs:
        if key == "received-at":
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
            return moment if moment.tzinfo is not None else None
    return None
