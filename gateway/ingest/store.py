"""Turn one batch of MQTT messages into committed rows: observations, events, dead letters.

The whole batch is one transaction. Observations are COPied straight into the partitioned
table, about half the database's work of the deduplicating way. When a key is already stored
(a message delivered twice), or when row security keeps COPY out of the table, they go
through COPY into a temporary staging table, then ``INSERT ... ON CONFLICT DO NOTHING``, so a
message delivered twice is stored once. What to send back to devices (replies, replay
requests) is returned, to be published only after the commit.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from gateway.db import month_start, uses_timescaledb
from gateway.ingest import gaps
from gateway.ingest.flags_array import FlagsDumper
from gateway.ingest.plan import Incoming, Outbound, Plan, Planner, parse_batch
from gateway.ingest.registry_cache import RegistryCache
from gateway.ingest.resolve import Rejected
from gateway.ingest.topics import TopicError, UpTopic, parse_up
from provisioning import lifecycle
from provisioning.errors import ProvisioningError

__all__ = ["BatchResult", "BatchStore", "Incoming", "Outbound"]

log = logging.getLogger(__name__)

_OBS_COLUMNS = (
    "ts", "device_id", "code", "principal_code", "patient_key", "mdc", "value", "unit",
    "measured_at", "absent_reason", "flags", "panel", "device_user", "channel", "received_at",
    "sequence", "clock_offset_s", "value_code", "sampled",
)
# The staging table's column types, in _OBS_COLUMNS order: binary COPY spends far less time
# encoding a batch than text COPY (the flags arrays above all).
_OBS_TYPES = (
    "timestamptz", "text", "text", "text", "text", "int4", "numeric", "text",
    "timestamptz", "text", "text[]", "text", "int2", "text", "timestamptz",
    "int4", "float8", "jsonb", "jsonb",
)
_EVENT_COLUMNS = (
    "occurred_at", "device_id", "principal_code", "patient_key", "type", "data", "channel",
    "device_time", "received_at", "ref",
)
_STAGE = "observations_stage"
# How stale a device's stored last_seen may grow while it keeps sending. Supervision compares
# last_seen with reporting intervals of minutes to a day (firmware profiles), far beyond this.
LAST_SEEN_EVERY = timedelta(seconds=5)
# How far apart a device's retransmissions of one event may arrive (DC-09 units retry for
# minutes without an ACK; sequence numbers wrap at 9999, far beyond this).
_RETRANSMISSION_WINDOW = timedelta(minutes=10)
# The device history action recording a firmware version a device reported, and who did it.
FIRMWARE_REPORTED = "firmware_reported"
_ACTOR = "gateway"


@dataclass(slots=True)
class BatchResult:
    """What one committed batch did, and what to send afterwards."""

    messages: int = 0
    stored_messages: int = 0
    observations_new: int = 0
    events_new: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    ignored: int = 0
    outbound: list[Outbound] = field(default_factory=list)

    def merge(self, part: BatchResult) -> None:
        """Add another result to this one."""
        self.messages += part.messages
        self.stored_messages += part.stored_messages
        self.observations_new += part.observations_new
        self.events_new += part.events_new
        self.ignored += part.ignored
        self.outbound.extend(part.outbound)
        for reason, count in part.dead_letters.items():
            self.dead_letters[reason] = self.dead_letters.get(reason, 0) + count


def _can_copy_into_observations(conn: psycopg.Connection[Any]) -> bool:
    """Whether COPY may write straight into observations: PostgreSQL refuses COPY FROM into a
    table whose row security applies to the user, as FORCE makes it apply to an owner that
    is neither superuser nor BYPASSRLS."""
    row = conn.execute("SELECT row_security_active('observations')").fetchone()
    return row is not None and not row[0]


class BatchStore:
    """Writes batches on one connection; keeps per-connection state (partitions seen)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        # Months whose partition exists; those the open batch made count only once it commits
        # (a rolled-back batch takes its new partitions with it).
        self._months: set[datetime] = set()
        self._pending_months: set[datetime] = set()
        # COPY finds the flags column's dumper by its type: this one encodes each list once.
        conn.adapters.register_dumper(None, FlagsDumper)
        self._timescale = uses_timescaledb(conn)
        self._direct_copy = _can_copy_into_observations(conn)
        conn.commit()
        self._registry = RegistryCache(conn)
        # The last_seen this connection committed per device, and what the open batch writes.
        self._seen_written: dict[str, datetime] = {}
        self._pending_seen: dict[str, datetime] = {}

    @property
    def copies_directly(self) -> bool:
        """Whether batches without stored keys are COPied straight into observations."""
        return self._direct_copy

    def close(self) -> None:
        """Close the connection (a broken one too)."""
        self._conn.close()

    def write(self, batch: Sequence[Incoming]) -> BatchResult:
        """Decode, resolve and store a batch in one transaction, then commit."""
        conn = self._conn
        try:
            plan = Plan()
            parsed = parse_batch(batch, plan)
            Planner(self._registry.registry(t for _, t in parsed)).plan(parsed, plan)
            self._ensure_partitions(plan.observations)
            result = BatchResult(messages=len(batch), stored_messages=plan.stored_messages,
                                 ignored=plan.ignored, outbound=plan.outbound)
            result.observations_new = self._insert_observations(plan.observations)
            transport = gaps.track(conn, gaps.arrivals(batch))
            result.events_new = self._insert_events(plan.events + self._states(plan)
                                                    + transport)
            self._sequences(plan)
            self._confirm_wipes(plan)
            self._firmware_reported(plan)
            for message, topic, rejected in plan.dead:
                self._dead_letter(message, topic, rejected)
                reason = rejected.reason
                result.dead_letters[reason] = result.dead_letters.get(reason, 0) + 1
            conn.commit()
            self._seen_written.update(self._pending_seen)
            self._months |= self._pending_months
        except BaseException:
            conn.rollback()
            raise
        finally:
            self._pending_months.clear()
        return result

    def write_isolating(self, batch: Sequence[Incoming]) -> BatchResult:
        """Write a batch; if the database refuses it (not an outage) or a message trips a fault
        of ours, write the messages one by one and set each failing one aside, so one bad
        message never stalls ingestion."""
        try:
            return self.write(batch)
        except psycopg.OperationalError:
            raise
        except Exception:
            log.exception("batch of %d failed; storing its messages one by one", len(batch))
        total = BatchResult()
        for message in batch:
            try:
                part = self.write([message])
            except psycopg.OperationalError:
                raise
            except psycopg.Error as single:
                part = self.write_rejected(message, Rejected("store_error", str(single)))
            except Exception as fault:  # a bug of ours must cost one message, not the gateway
                log.exception("message on %s set aside", message.topic)
                part = self.write_rejected(message, Rejected("internal_error", repr(fault)))
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

    def _states(self, plan: Plan) -> list[tuple[Any, ...]]:
        """Record when devices were last heard and their clocks; a returning device's event."""
        with self._conn.cursor() as cur:
            # One statement for the whole batch, in device order (so two writers lock rows
            # in the same order): a batch often holds hundreds of devices. Arrays go in
            # binary (%b), as in registry_cache.
            seen = [(d, t) for d, t in sorted(plan.seen.items()) if self._stale(d, t, plan)]
            self._pending_seen = dict(seen)
            if seen:
                cur.execute(
                    "INSERT INTO device_state (device_id, last_seen, online)"
                    " SELECT d, t, true FROM unnest(%b::text[], %b::timestamptz[]) AS u(d, t)"
                    " ON CONFLICT (device_id) DO UPDATE SET online = true,"
                    " last_seen = GREATEST(device_state.last_seen, EXCLUDED.last_seen)",
                    ([d for d, _ in seen], [t for _, t in seen]),
                )
            clocks = sorted(plan.clocks.items())
            if clocks:
                cur.execute(
                    "UPDATE device_state s SET clock_offset_s = u.o, clock_checked_at = u.t"
                    " FROM unnest(%b::text[], %b::float8[], %b::timestamptz[]) AS u(d, o, t)"
                    " WHERE s.device_id = u.d",
                    ([d for d, _ in clocks], [c.offset_s for _, c in clocks],
                     [c.checked_at for _, c in clocks]),
                )
            principals = dict(cur.execute(
                "SELECT id, principal_code FROM devices WHERE id = ANY(%s)",
                (sorted(plan.came_back),)).fetchall()) if plan.came_back else {}
        return [
            (at, device_id, principals[device_id], None, "device.online",
             Jsonb({"after": "offline"}), "supervision", False, at, "")
            for device_id, (_, at) in sorted(plan.came_back.items())
        ]

    def _stale(self, device_id: str, last_seen: datetime, plan: Plan) -> bool:
        """Whether a device's last_seen must be written now: it came back, this connection
        has not written it, or what it wrote is LAST_SEEN_EVERY old. A device sending a burst
        (a hub emptying its store) is then written every few seconds, not with every batch."""
        if device_id in plan.came_back:
            return True
        written = self._seen_written.get(device_id)
        return written is None or last_seen - written >= LAST_SEEN_EVERY

    def _sequences(self, plan: Plan) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO record_sequences (device_id, channel, last_sequence,"
                " requested_after, requested_at) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (device_id, channel) DO UPDATE SET"
                " last_sequence = GREATEST(record_sequences.last_sequence,"
                "                          EXCLUDED.last_sequence),"
                " requested_after = EXCLUDED.requested_after,"
                " requested_at = EXCLUDED.requested_at",
                plan.sequence_updates,
            )

    def _confirm_wipes(self, plan: Plan) -> None:
        """Record devices' wipe confirmations; a stale or foreign nonce confirms nothing (the
        event is kept all the same) and never fails the batch."""
        for device_id, nonce, at in plan.wipes:
            try:
                with self._conn.transaction():
                    lifecycle.confirm_wipe(self._conn, device_id=device_id, nonce=nonce,
                                           confirmed_at=at, actor="gateway")
            except ProvisioningError as exc:
                log.warning("wipe confirmation from %s not recorded: %s", device_id, exc,
                            extra={"device": device_id})

    def _firmware_reported(self, plan: Plan) -> None:
        """Keep each device's registered firmware version as its status documents report it,
        with a ``firmware_reported`` history row (old, new) for every change.

        The registry cache holds no firmware, so the versions of the devices that reported one
        are read in one query; the update runs only when one differs, because every write to
        ``devices`` makes each gateway reload its registry cache. A status older than the last
        change recorded (a hub emptying its store) never turns the version back.
        """
        if not plan.firmware:
            return
        reported = sorted(plan.firmware.items())
        with self._conn.cursor() as cur:
            registered = dict(cur.execute(
                "SELECT id, firmware_version FROM devices WHERE id = ANY(%s)",
                ([device for device, _ in reported],)).fetchall())
            changed = [(device, version, at) for device, (version, at) in reported
                       if device in registered and registered[device] != version]
            if not changed:
                return
            # The rows are locked in id order (as _states locks device_state), and the
            # history row is written as lifecycle.record writes one, for the owner at the time.
            cur.execute(
                "WITH reported AS (SELECT * FROM unnest(%s::text[], %s::text[],"
                "  %s::timestamptz[]) AS r(device_id, firmware, reported_at)),"
                " previous AS (SELECT d.id, d.firmware_version AS was FROM devices d"
                "  JOIN reported r ON r.device_id = d.id"
                "  WHERE d.firmware_version IS DISTINCT FROM r.firmware"
                "  AND NOT EXISTS (SELECT 1 FROM device_history h WHERE h.device_id = d.id"
                "   AND h.action = %s"
                "   AND (h.detail->>'reported_at')::timestamptz > r.reported_at)"
                "  ORDER BY d.id FOR UPDATE OF d),"
                " changed AS (UPDATE devices d SET firmware_version = r.firmware"
                "  FROM reported r JOIN previous p ON p.id = r.device_id"
                "  WHERE d.id = r.device_id"
                "  RETURNING d.id, d.principal_code, p.was, r.firmware, r.reported_at)"
                " INSERT INTO device_history (device_id, principal_code, action, actor, detail)"
                " SELECT id, principal_code, %s, %s, jsonb_build_object('old', was,"
                "  'new', firmware, 'reported_at', reported_at,"
                "  'reason', 'reported in the device''s status document')"
                " FROM changed ORDER BY id",
                ([d for d, _, _ in changed], [v for _, v, _ in changed],
                 [at for _, _, at in changed], FIRMWARE_REPORTED, FIRMWARE_REPORTED,
                 _ACTOR),
            )

    def _ensure_partitions(self, rows: list[tuple[Any, ...]]) -> None:
        if self._timescale:
            return
        months: set[datetime] = set()
        settled: set[tuple[int, int]] = set()
        for row in rows:
            at = row[0]
            # Away from a month's first and last days, the UTC month is the local one (offsets
            # are under a day), so one row of each local month there stands for the rest.
            if 1 < at.day < 28:
                if (at.year, at.month) in settled:
                    continue
                settled.add((at.year, at.month))
            months.add(month_start(at))
        for month in sorted(months - self._months - self._pending_months):
            self._conn.execute("SELECT aidlink_ensure_observation_partition(%s)", (month,))
            self._pending_months.add(month)

    def _insert_observations(self, rows: list[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        if self._direct_copy:
            try:
                # A savepoint: a key already stored (a redelivered message) undoes the COPY
                # alone, and the batch goes the deduplicating way below.
                with self._conn.transaction(), self._conn.cursor() as cur:
                    self._copy(cur, "observations", rows)
                return len(rows)
            except psycopg.errors.UniqueViolation:
                log.debug("batch holds observations already stored; deduplicating")
        columns = ", ".join(_OBS_COLUMNS)
        with self._conn.cursor() as cur:
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE observations INCLUDING DEFAULTS)"
                " ON COMMIT DELETE ROWS"
            )
            self._copy(cur, _STAGE, rows)
            cur.execute(
                f"INSERT INTO observations ({columns}) SELECT {columns} FROM {_STAGE}"
                " ON CONFLICT DO NOTHING"
            )
            inserted = cur.rowcount
            cur.execute(f"TRUNCATE {_STAGE}")
        return max(inserted, 0)

    @staticmethod
    def _copy(cur: psycopg.Cursor[Any], table: str, rows: list[tuple[Any, ...]]) -> None:
        with cur.copy(f"COPY {table} ({', '.join(_OBS_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
                      ) as copy:
            copy.set_types(_OBS_TYPES)
            for row in rows:
                copy.write_row(row)

    def _insert_events(self, rows: list[tuple[Any, ...]]) -> int:
        inserted = 0
        columns = ", ".join(_EVENT_COLUMNS)
        with self._conn.cursor() as cur:
            for row in rows:
                values = dict(zip(_EVENT_COLUMNS, row, strict=True))
                cur.execute(
                    f"INSERT INTO events ({columns})"
                    f" SELECT {', '.join(f'%({c})s' for c in _EVENT_COLUMNS)}"
                    # A device that saw no acknowledgement sends the event again, and the
                    # resent copy may carry a later time (a DC-09 timestamp is the moment of
                    # transmission; a frame without one is timed by its arrival). The same
                    # device, type and sequence number within the window is the same event.
                    " WHERE %(ref)s = '' OR NOT EXISTS ("
                    "  SELECT 1 FROM events e WHERE e.device_id = %(device_id)s"
                    "  AND e.type = %(type)s AND e.ref = %(ref)s"
                    "  AND e.occurred_at BETWEEN %(occurred_at)s - %(window)s"
                    "  AND %(occurred_at)s + %(window)s)"
                    " ON CONFLICT DO NOTHING",
                    {**values, "window": _RETRANSMISSION_WINDOW},
                )
                inserted += max(cur.rowcount, 0)
        return inserted

    def _dead_letter(self, message: Incoming, topic: UpTopic | None, rejected: Rejected) -> None:
        self._conn.execute(
            "INSERT INTO dead_letters (first_seen, last_seen, topic, client_id, device_id,"
            " principal_code, channel, payload, payload_sha256, reason, detail)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (topic, payload_sha256) DO UPDATE"
            " SET last_seen = EXCLUDED.last_seen, times = dead_letters.times + 1,"
            # Seen again after retention removed its bytes: keep the new copy.
            " payload = COALESCE(dead_letters.payload, EXCLUDED.payload),"
            " payload_removed_at = CASE WHEN dead_letters.payload IS NULL THEN NULL"
            " ELSE dead_letters.payload_removed_at END",
            (
                message.received_at, message.received_at, _text(message.topic),
                None if topic is None else _text(topic.client_id),
                None if topic is None else _text(topic.device_id),
                rejected.principal, None if topic is None else _text(topic.channel),
                message.payload, hashlib.sha256(message.payload).digest(),
                rejected.reason, _text(rejected.detail),
            ),
        )


def _text(value: str) -> str:
    """Text PostgreSQL can hold: a NUL (which MQTT forbids in topics, but a broken client may
    send) is written as an escape so the dead letter itself is never refused."""
    return value.replace("\x00", "\\x00")
