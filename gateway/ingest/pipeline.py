"""The gateway process: subscribe, batch, commit, and only then acknowledge.

Threads: paho's network loop puts each message on the queue of one writer lane; each lane's
writer thread collects a batch (at most ``batch_max_rows`` messages or ``batch_max_delay``
after the first), commits it on its own database connection and then acknowledges every
message of it. A client id always goes to the same lane, so one device's (or one hub's)
messages are stored in the order they came, and sequence gaps, replays and duplicates are
judged as with one writer; with two lanes one batch is planned while the other waits for
PostgreSQL. The queues are bounded by the broker's in-flight window: we ask for at most
``receive_maximum`` unacknowledged messages (MQTT 5 Receive Maximum; Mosquitto's
max_inflight_messages for 3.1.1), so memory stays flat whatever the backlog. When the
database fails, the batch is retried and nothing is acknowledged, so the broker keeps the
messages: that is the backpressure, and ``health()`` says when it is engaged.

Several gateways may share one subscription (``$share/GROUP/...``, MQTT 5): each message goes
to one member, and every member keeps a persistent session of its own, so a member's
unacknowledged messages wait in its session until it comes back with the same client id.
"""

from __future__ import annotations

import logging
import queue
import threading
import zlib
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
from gateway.ingest.lanes import Lane, collect
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
    batch_max_delay: float = 0.025
    receive_maximum: int = 1000
    subscription: str = SUBSCRIPTION
    supervision_interval: float = 30.0
    # Messages waiting while nothing has been committed for this long: the database is slow.
    slow_after: float = 30.0
    # Writer lanes, each with its own thread and database connection.
    writers: int = 2


class Gateway:
    """Ingest from MQTT into PostgreSQL, acknowledging only committed messages."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        if config.writers < 1:
            raise ValueError(f"writers must be at least 1, not {config.writers}")
        # The broker sends at most receive_maximum unacknowledged messages, all of which may
        # belong to one lane; the other half of the bound is room for DC-09 frames from
        # submit(), which no broker window limits.
        self._lanes = [Lane(i, config.receive_maximum * 2) for i in range(config.writers)]
        self._totals_lock = threading.Lock()
        self._stop = threading.Event()
        self._generation = 0
        self._connected = threading.Event()
        self._db_ok = False
        self._db_error = ""
        self._last_commit: datetime | None = None
        self.totals = BatchResult()
        target = parse_mqtt_url(config.mqtt_url)
        self._target = target
        self._client = new_client(config.client_id, protocol=config.protocol, persistent=True)
        self._client.manual_ack_set(True)
        if target.username is not None:
            self._client.username_pw_set(target.username, target.password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._subscribe_mid: int | None = None
        self._client.on_message = self._on_message
        self._writers = [
            threading.Thread(target=self._write_loop, args=(lane,), daemon=True,
                             name="aidlink-writer" if lane.index == 0
                             else f"aidlink-writer-{lane.index}")
            for lane in self._lanes
        ]
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
        for writer in self._writers:
            writer.start()
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
        for writer in self._writers:
            writer.join(timeout=10)
        self._supervisor.join(timeout=10)
        # The last batches' PUBACKs must reach the broker before the DISCONNECT, or their
        # messages come again next session (stored once, but all that work twice).
        if self._connected.is_set() and not self._client.flushed(timeout=5):
            log.warning("the broker did not confirm the last acknowledgements in 5 s; it may"
                        " deliver those messages again")
        self._client.disconnect()
        self._client.loop_stop()

    def health(self) -> dict[str, Any]:
        """Whether ingestion works, and if not, why; with the numbers behind the verdict."""
        now = datetime.now(UTC)
        in_hand = [m for lane in self._lanes for m in list(lane.in_hand)]
        queued = sum(lane.queue.qsize() for lane in self._lanes)
        heads: list[datetime] = []
        for lane in self._lanes:
            lane_in_hand = list(lane.in_hand)
            heads.extend(m.received_at for m in lane_in_hand[:1])
            if not lane_in_hand:
                heads.extend(self._oldest_queued(lane))
        oldest = min(heads, default=None)
        oldest_age = None if oldest is None else round((now - oldest).total_seconds(), 1)
        last = self._last_commit
        in_flight = queued + len(in_hand)
        reasons = []
        if not self._connected.is_set():
            reasons.append("not connected to the MQTT broker")
        if not self._db_ok:
            reasons.append(f"database unavailable: {self._db_error}" if self._db_error
                           else "database not yet connected")
        elif (oldest_age is not None and oldest_age > self.config.slow_after
              and (last is None or (now - last).total_seconds() > self.config.slow_after)):
            reasons.append(f"database slow: oldest unacknowledged message {oldest_age:.0f} s"
                           f" old, no commit for over {self.config.slow_after:.0f} s")
        if in_flight >= self.config.receive_maximum:
            reasons.append(f"backpressure engaged: {in_flight} messages in flight, at the"
                           f" receive maximum of {self.config.receive_maximum}; the broker"
                           " holds the rest")
        return {
            "status": "ok" if not reasons else "degraded",
            "reasons": reasons,
            "client_id": self.config.client_id,
            "subscription": self.config.subscription,
            "connected": self._connected.is_set(),
            "database": self._db_ok,
            "queued": queued,
            "in_flight": in_flight,
            "receive_maximum": self.config.receive_maximum,
            "oldest_unacknowledged_age_s": oldest_age,
            "last_commit": None if last is None else last.isoformat(),
            "last_commit_age_s": None if last is None else round((now - last).total_seconds(), 1),
        }

    @staticmethod
    def _oldest_queued(lane: Lane) -> list[datetime]:
        with lane.queue.mutex:
            head = lane.queue.queue[0] if lane.queue.queue else None
        return [] if head is None else [head.received_at]

    def waiting(self) -> list[Incoming]:
        """Every message taken from the broker and not yet acknowledged, lane by lane."""
        return [m for lane in self._lanes
                for m in [*list(lane.in_hand), *list(lane.queue.queue)]]

    def _lane(self, topic: str) -> Lane:
        # aidlink/v1/{client_id}/...: the client id picks the lane, so a hub and every
        # peripheral it speaks for share one. crc32 rather than hash(): stable across runs.
        if len(self._lanes) == 1:
            return self._lanes[0]
        parts = topic.split("/", 3)
        key = parts[2] if len(parts) > 2 else topic
        return self._lanes[zlib.crc32(key.encode("utf-8", "surrogateescape"))
                           % len(self._lanes)]

    def submit(self, topic: str, payload: bytes) -> Future[bool]:
        """Feed a message that did not come over MQTT (a DC-09 frame) into the same pipeline;
        the future resolves True once it is committed."""
        done: Future[bool] = Future()
        self._lane(topic).queue.put(Incoming(topic=topic, payload=payload,
                                             received_at=datetime.now(UTC), qos=0, done=done))
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
        if flags.session_present:
            self._drop_stale()
        # Connected counts from the SUBACK, not the CONNECT: a device that publishes in
        # between would find no subscriber, and without a session its message has no home.
        _, self._subscribe_mid = client.subscribe(self.config.subscription, qos=1)
        log.info("gateway connected (session present: %s)", flags.session_present)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: Any, properties: Any) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [code for code in reason_codes if code.is_failure]
        if refused:
            log.error("broker refused the gateway's subscription to %s: %s",
                      self.config.subscription, refused[0])
            return
        self._connected.set()

    def _drop_stale(self) -> None:
        """Forget queued messages of an earlier connection: the resumed session redelivers
        every one of them, and keeping both copies would let reconnects during an outage fill
        the queue and stall paho's network thread on put(). Without a session nothing is
        redelivered, so the copies are kept and stored (they just cannot be acknowledged)."""
        dropped = 0
        for lane in self._lanes:
            with lane.queue.mutex:
                keep = [m for m in lane.queue.queue
                        if m.done is not None or m.generation == self._generation]
                dropped += len(lane.queue.queue) - len(keep)
                lane.queue.queue.clear()
                lane.queue.queue.extend(keep)
                lane.queue.not_full.notify_all()
        if dropped:
            log.info("dropped %d queued messages of the previous connection; the broker"
                     " redelivers them", dropped)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("gateway disconnected from broker: %s", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        properties = _user_properties(msg)
        # Blocks only if the queue is full, which the broker's window (receive_maximum) and
        # _drop_stale keep from happening for MQTT messages; a broker that ignores the window
        # must not keep this thread (and so stop()) waiting once the writer has ended.
        incoming = Incoming(
            topic=msg.topic,
            payload=bytes(msg.payload),
            received_at=datetime.now(UTC),
            hub_received_at=_received_at(properties.get("received-at")),
            mid=msg.mid,
            qos=msg.qos,
            generation=self._generation,
            seq=_seq(properties.get("seq")),
        )
        lane = self._lane(incoming.topic)
        while True:
            try:
                lane.queue.put(incoming, timeout=0.5)
                return
            except queue.Full:
                if self._stop.is_set():
                    return  # never acknowledged: the broker delivers it again next session

    # -- writer thread -------------------------------------------------------------------------
    def _write_loop(self, lane: Lane) -> None:
        try:
            self._write_batches(lane)
        finally:
            if lane.store is not None:
                lane.store.close()

    def _write_batches(self, lane: Lane) -> None:
        store: BatchStore | None = None
        while not self._stop.is_set():
            if store is None or not self._db_ok:
                # Connect before the first message too, so an idle gateway reports healthy,
                # and reconnect once the supervisor has found the database gone while idle.
                if store is not None:
                    store.close()
                store = lane.store = self._try_connect()
            batch = self._collect(lane.queue)
            if not batch:
                continue
            lane.in_hand = batch
            while True:
                try:
                    if store is None:
                        store = lane.store = self._connect_store()
                    result = store.write_isolating(batch)
                    break
                except psycopg.OperationalError as exc:
                    metrics.DB_FAILURES.inc()
                    self._db_down(exc)
                    log.warning("database write failed, batch kept unacknowledged: %s",
                                self._db_error)
                    if store is not None:
                        store.close()
                    store = lane.store = None
                    if self._stop.wait(1.0):
                        return
            self._db_ok, self._db_error = True, ""
            self._last_commit = datetime.now(UTC)
            self._account(batch, result)
            for outbound in result.outbound:
                self._client.publish(outbound.topic, outbound.payload, qos=1)
            self._ack(batch)
            lane.in_hand = []

    def _try_connect(self) -> BatchStore | None:
        try:
            store = self._connect_store()
        except psycopg.OperationalError as exc:
            self._db_down(exc)
            self._stop.wait(1.0)
            return None
        self._db_ok, self._db_error = True, ""
        return store

    def _db_down(self, exc: psycopg.OperationalError) -> None:
        self._db_ok = False
        self._db_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    def _connect_store(self) -> BatchStore:
        conn = psycopg.connect(self.config.database_url, connect_timeout=5)
        return BatchStore(conn)

    def _collect(self, source: queue.Queue[Incoming]) -> list[Incoming]:
        return collect(source, self.config.batch_max_rows, self.config.batch_max_delay)

    def _account(self, batch: Sequence[Incoming], result: BatchResult) -> None:
        with self._totals_lock:
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
        mids = []
        for message in batch:
            if message.done is not None:
                message.done.set_result(True)
            elif message.qos == 1 and message.generation == self._generation:
                mids.append(message.mid)
        self._client.ack_all(mids)

    # -- supervisor thread -----------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stop.wait(self.config.supervision_interval):
            try:
                with psycopg.connect(self.config.database_url, connect_timeout=5) as conn:
                    # The sweep logs each device it marks offline, with its principal.
                    supervision.sweep(conn, datetime.now(UTC))
            except psycopg.Error as exc:
                log.warning("supervision sweep failed: %s", str(exc).splitlines()[0])
                if isinstance(exc, psycopg.OperationalError):
                    # An idle gateway learns of an outage here, not at its next write.
                    self._db_down(exc)


def _user_properties(msg: mqtt.MQTTMessage) -> dict[str, str]:
    """The MQTT 5 user properties of a message (the first value of a repeated key)."""
    props = getattr(msg, "properties", None)
    pairs = getattr(props, "UserProperty", None) or []
    found: dict[str, str] = {}
    for key, value in pairs:
        found.setdefault(key, value)
    return found


def _received_at(value: str | None) -> datetime | None:
    """The hub's ``received-at`` (RFC 3339), when present and valid."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _seq(value: str | None) -> int | None:
    """The hub's ``seq`` publish counter, when present and a non-negative integer."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return int(value)
