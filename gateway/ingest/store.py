"""Turn one batch of MQTT messages into committed rows: observations, events, dead letters.

The whole batch is one transaction. Observations go through COPY into a temporary staging
table, then ``INSERT ... ON CONFLICT DO NOTHING`` into the partitioned table, so a message
delivered twice is stored once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

from adapters.errors import DecodeError, UnknownChannelError
from adapters.model import DecodeContext, Event, Observation, Record, dumps
from adapters.registry import decode
from gateway.db import month_start, uses_timescaledb
from gateway.ingest.resolve import Registry, Rejected
from gateway.ingest.topics import TopicError, UpTopic, parse_up

log = logging.getLogger(__name__)

_OBS_COLUMNS = (
    "ts", "device_id", "code", "principal_code", "patient_key", "mdc", "value", "unit",
    "measured_at", "absent_reason", "flags", "panel", "device_user", "channel", "received_at",
)
_STAGE = "observations_stage"


@dataclass(frozen=True, slots=True)
class Incoming:
    """One MQTT message as the gateway received it."""

    topic: str
    payload: bytes
    received_at: datetime
    hub_received_at: datetime | None = None
    mid: int = 0
    qos: int = 1
    generation: int = 0


@dataclass(slots=True)
class BatchResult:
    """What one committed batch did."""

    messages: int = 0
    stored_messages: int = 0
    observations_new: int = 0
    events_new: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    ignored: int = 0

    def merge(self, part: BatchResult) -> None:
        """Add another result to this one."""
        self.messages += part.messages
        self.stored_messages += part.stored_messages
        self.observations_new += part.observations_new
        self.events_new += part.events_new
        self.ignored += part.ignored
        for reason, count in part.dead_letters.items():
            self.dead_letters[reason] = self.dead_letters.get(reason, 0) + count


@dataclass(slots=True)
class _Plan:
    observations: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    dead: list[tuple[Incoming, UpTopic | None, Rejected]] = field(default_factory=list)


class BatchStore:
    """Writes batches on one connection; keeps per-connection state (partitions seen)."""

    def __init__(self, conn: psycopg.Connection[Any], *, zone: ZoneInfo) -> None:
        self._conn = conn
        self._zone = zone
        self._months: set[datetime] = set()
        self._timescale = uses_timescaledb(conn)
        conn.commit()

    def close(self) -> None:
        """Close the connection (a broken one too)."""
        self._conn.close()

    def write(self, batch: Sequence[Incoming]) -> BatchResult:
        """Decode, resolve and store a batch in one transaction, then commit."""
        result = BatchResult(messages=len(batch))
        conn = self._conn
        try:
            plan = self._plan(batch, result)
            self._ensure_partitions(plan.observations)
            result.observations_new = self._insert_observations(plan.observations)
            result.events_new = self._insert_events(plan.events)
            for message, topic, rejected in plan.dead:
                self._dead_letter(message, topic, rejected)
                reason = rejected.reason
                result.dead_letters[reason] = result.dead_letters.get(reason, 0) + 1
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return result

    def _plan(self, batch: Sequence[Incoming], result: BatchResult) -> _Plan:
        plan = _Plan()
        parsed: list[tuple[Incoming, UpTopic | None]] = []
        for message in batch:
            try:
                topic = parse_up(message.topic)
            except TopicError as exc:
                plan.dead.append((message, None, Rejected("bad_topic", str(exc))))
                continue
            if topic is None:
                result.ignored += 1
                continue
            parsed.append((message, topic))
        registry = Registry(self._conn, (t for _, t in parsed if t is not None))
        for message, topic in parsed:
            assert topic is not None
            verdict = registry.resolve(topic)
            if isinstance(verdict, Rejected):
                plan.dead.append((message, topic, verdict))
                continue
            device = verdict.device
            try:
                ctx = DecodeContext(zone=self._zone, received_at=message.hub_received_at)
                records = decode(topic.channel, message.payload, ctx)
            except UnknownChannelError as exc:
                plan.dead.append((message, topic, Rejected("unknown_channel", str(exc),
                                                           device.principal)))
                continue
            except DecodeError as exc:
                log.info("rejected %s from %s: %s payload=%s", topic.channel, device.id,
                         exc.reason, message.payload.hex())
                plan.dead.append((message, topic, Rejected("decode_error", exc.reason,
                                                           device.principal)))
                continue
            result.stored_messages += 1
            for record in records:
                self._add(plan, record, message, topic, device.principal, registry)
        return plan

    def _add(self, plan: _Plan, record: Record, message: Incoming, topic: UpTopic,
             principal: str, registry: Registry) -> None:
        fallback = message.hub_received_at or message.received_at
        if isinstance(record, Observation):
            ts = record.measured_at or fallback
            plan.observations.append((
                ts, topic.device_id, record.code, principal,
                registry.patient_at(topic.device_id, ts), record.mdc, record.value,
                record.unit, record.measured_at,
                None if record.absent_reason is None else str(record.absent_reason),
                list(record.flags), record.panel, record.device_user, topic.channel,
                message.received_at,
            ))
        elif isinstance(record, Event):
            at = record.occurred_at or fallback
            plan.events.append((
                at, topic.device_id, principal, registry.patient_at(topic.device_id, at),
                record.type, Jsonb(record.data, dumps=dumps), topic.channel,
                record.occurred_at is not None, message.received_at,
            ))

    def _ensure_partitions(self, rows: list[tuple[Any, ...]]) -> None:
        if self._timescale:
            return
        for month in sorted({month_start(row[0]) for row in rows} - self._months):
            self._conn.execute("SELECT aidlink_ensure_observation_partition(%s)", (month,))
            self._months.add(month)

    def _insert_observations(self, rows: list[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        columns = ", ".join(_OBS_COLUMNS)
        with self._conn.cursor() as cur:
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE observations INCLUDING DEFAULTS)"
                " ON COMMIT DELETE ROWS"
            )
            with cur.copy(f"COPY {_STAGE} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(
                f"INSERT INTO observations ({columns}) SELECT {columns} FROM {_STAGE}"
                " ON CONFLICT DO NOTHING"
            )
            inserted = cur.rowcount
            cur.execute(f"TRUNCATE {_STAGE}")
        return max(inserted, 0)

    def _insert_events(self, rows: list[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        inserted = 0
        with self._conn.cursor() as cur:
            for row in rows:
                cur.execute(
                    "INSERT INTO events (occurred_at, device_id, principal_code, patient_key,"
                    " type, data, channel, device_time, received_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    row,
                )
                inserted += max(cur.rowcount, 0)
        return inserted

    def _dead_letter(self, message: Incoming, topic: UpTopic | None, rejected: Rejected) -> None:
        self._conn.execute(
            "INSERT INTO dead_letters (first_seen, last_seen, topic, client_id, device_id,"
            " principal_code, channel, payload, payload_sha256, reason, detail)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (topic, payload_sha256) DO UPDATE"
            " SET last_seen = EXCLUDED.last_seen, times = dead_letters.times + 1",
            (
                message.received_at, message.received_at, _text(message.topic),
                None if topic is None else _text(topic.client_id),
                None if topic is None else _text(topic.device_id),
                rejected.principal, None if topic is None else _text(topic.channel),
                message.payload, hashlib.sha256(message.payload).digest(),
                rejected.reason, _text(rejected.detail),
            ),
        )

    def write_isolating(self, batch: Sequence[Incoming]) -> BatchResult:
        """Write a batch; if the database refuses it (not an outage), write the messages one
        by one and set each refused one aside, so one bad message never stalls ingestion."""
        try:
            return self.write(batch)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            log.error("batch of %d refused by the database (%s); storing one by one",
                      len(batch), exc)
        total = BatchResult()
        for message in batch:
            try:
                part = self.write([message])
            except psycopg.OperationalError:
                raise
            except psycopg.Error as single:
                part = self.write_rejected(message, Rejected("store_error", str(single)))
            total.merge(part)
        return total

    def write_rejected(self, message: Incoming, rejected: Rejected) -> BatchResult:
        """Set one message aside as a dead letter and commit."""
        try:
            topic = parse_up(message.topic)
        except TopicError:
            topic = None
        try:
            self._dead_letter(message, topic, rejected)
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise
        return BatchResult(messages=1, dead_letters={rejected.reason: 1})


def _text(value: str) -> str:
    """Text PostgreSQL can hold: a NUL (which MQTT forbids in topics, but a broken client may
    send) is written as an escape so the dead letter itself is never refused."""
    return value.replace("\x00", "\\x00")
