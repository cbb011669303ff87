"""Plan one batch: resolve, decode, fix device time, track records; no writes here."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from adapters.errors import DecodeError, UnknownChannelError
from adapters.model import DecodeContext, Event, Record, dumps
from adapters.registry import decode
from gateway.ingest.device_time import ClockReading, correct, read_clock
from gateway.ingest.replies import REPLIES
from gateway.ingest.resolve import Registry, Rejected, Resolved
from gateway.ingest.topics import TopicError, UpTopic, down_topic, parse_up

log = logging.getLogger(__name__)

# Ask a hub for missing stored records at most this often for the same gap.
REPLAY_BACKOFF = timedelta(minutes=5)
# The firmware versions the registry keeps: the dotted form onboarding accepts, which the
# policy's minimum-firmware rule compares number by number (provisioning.policy).
_FIRMWARE_VERSION = re.compile(r"^[0-9]+(\.[0-9]+){0,3}$")


# Not frozen: one is made for every message, and a frozen dataclass sets each field through
# object.__setattr__ (see adapters.model.Observation). Treat it as immutable.
@dataclass(slots=True)
class Incoming:
    """One MQTT message as the gateway received it."""

    topic: str
    payload: bytes
    received_at: datetime
    hub_received_at: datetime | None = None
    mid: int = 0
    qos: int = 1
    generation: int = 0
    # The hub's ``seq`` MQTT 5 user property: its per-client publish counter (see gaps.py).
    seq: int | None = None
    # Set for messages that did not come over MQTT (a DC-09 frame): resolved after the commit.
    done: Future[bool] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message to publish on a down topic once the batch is committed."""

    topic: str
    payload: bytes


@dataclass(slots=True)
class _Records:
    """Stored-record numbers of one device and channel seen in this batch."""

    client_id: str
    numbers: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Plan:
    """Everything one batch will write, and what it will send afterwards."""

    observations: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    dead: list[tuple[Incoming, UpTopic | None, Rejected]] = field(default_factory=list)
    seen: dict[str, datetime] = field(default_factory=dict)
    came_back: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    clocks: dict[str, ClockReading] = field(default_factory=dict)
    records: dict[tuple[str, str], _Records] = field(default_factory=dict)
    sequence_updates: list[tuple[str, str, int, int | None, datetime | None]] = field(
        default_factory=list)
    # (device, nonce, when): wipe confirmations to record against the lifecycle.
    wipes: list[tuple[str, str, datetime]] = field(default_factory=list)
    # device -> (firmware, when): the newest firmware version each device's status reported.
    firmware: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    outbound: list[Outbound] = field(default_factory=list)
    stored_messages: int = 0
    ignored: int = 0


class Planner:
    """Turns a batch into a Plan against one registry snapshot."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._offsets: dict[str, float | None] = {}

    def plan(self, parsed: Sequence[tuple[Incoming, UpTopic]], plan: Plan) -> Plan:
        """Resolve and decode every message, in order."""
        for message, topic in parsed:
            verdict = self._registry.resolve(topic)
            if isinstance(verdict, Rejected):
                plan.dead.append((message, topic, verdict))
                continue
            records = self._decode(plan, message, topic, verdict)
            if records is None:
                continue
            plan.stored_messages += 1
            self._saw(plan, verdict, message)
            self._add(plan, records, message, topic, verdict)
            self._answer(plan, message, topic, None)
        for message, dead_topic, rejected in plan.dead:
            if dead_topic is not None:
                self._answer(plan, message, dead_topic, rejected.reason)
        self._replays(plan)
        return plan

    @staticmethod
    def _answer(plan: Plan, message: Incoming, topic: UpTopic, rejected: str | None) -> None:
        if topic.channel not in REPLIES:
            return
        command, answer = REPLIES[topic.channel]
        body = answer(message.payload, rejected)
        if body is not None:
            plan.outbound.append(Outbound(down_topic(topic.client_id, command), body))

    def _decode(self, plan: Plan, message: Incoming, topic: UpTopic,
                verdict: Resolved) -> list[Record] | None:
        device = verdict.device
        try:
            ctx = DecodeContext(zone=device.zone, received_at=message.hub_received_at)
            return decode(topic.channel, message.payload, ctx)
        except UnknownChannelError as exc:
            plan.dead.append((message, topic, Rejected("unknown_channel", str(exc),
                                                       device.principal)))
        except DecodeError as exc:
            log.info("rejected %s from %s: %s payload=%s", topic.channel, device.id, exc.reason,
                     message.payload.hex(), extra={"device": device.id,
                                                   "principal": device.principal,
                                                   "client_id": topic.client_id})
            plan.dead.append((message, topic, Rejected("decode_error", exc.reason,
                                                       device.principal)))
        return None

    def _saw(self, plan: Plan, verdict: Resolved, message: Incoming) -> None:
        for row in {verdict.device.id: verdict.device, verdict.client.id: verdict.client}.values():
            previous = plan.seen.get(row.id)
            if previous is None or message.received_at > previous:
                plan.seen[row.id] = message.received_at
            if row.online is False and row.id not in plan.came_back:
                plan.came_back[row.id] = (row.client_id, message.received_at)

    def _add(self, plan: Plan, records: list[Record], message: Incoming, topic: UpTopic,
             verdict: Resolved) -> None:
        """Add one message's records; what they share (device, fallback time, patient of
        the same time) is looked up once, as a message often holds several values."""
        device = verdict.device
        fallback = message.hub_received_at or message.received_at
        principal = device.principal
        profile = device.profile
        has_clock = profile is None or profile.clock != "none"
        patient_ts: datetime | None = None
        patient: str | None = None
        for record in records:
            if isinstance(record, Event):
                self._add_event(plan, record, message, topic, verdict, fallback)
                continue
            offset = None
            if has_clock:
                # Read per record: a clock event earlier in the message may have set it.
                known = self._offsets.get(device.id, device.clock_offset_s)
                record, offset = correct(record, known)
            ts = record.measured_at or fallback
            if ts != patient_ts:
                patient, patient_ts = self._registry.patient_at(topic.device_id, ts), ts
            plan.observations.append((
                ts, topic.device_id, record.code, principal, patient, record.mdc,
                record.value, record.unit, record.measured_at,
                None if record.absent_reason is None else str(record.absent_reason),
                record.flags, record.panel, record.device_user, topic.channel,
                message.received_at, record.sequence, offset,
                None if record.coded is None else Jsonb(record.coded.to_json(), dumps=dumps),
                None if record.sampled is None else Jsonb(record.sampled.to_json(),
                                                          dumps=dumps),
            ))
            if record.sequence is not None:
                key = (device.id, topic.channel)
                plan.records.setdefault(key, _Records(topic.client_id)).numbers.append(
                    record.sequence)

    def _add_event(self, plan: Plan, record: Event, message: Incoming, topic: UpTopic,
                   verdict: Resolved, fallback: datetime) -> None:
        device = verdict.device
        if record.type == "device.clock":
            reading = read_clock(record, device.zone, fallback)
            if reading is not None:
                plan.clocks[device.id] = reading
                self._offsets[device.id] = reading.offset_s
                record = Event(record.type, record.occurred_at,
                               {**record.data, "offset_s": round(reading.offset_s, 3)})
        at = record.occurred_at or fallback
        if record.type == "device.wiped" and isinstance(record.data.get("nonce"), str):
            plan.wipes.append((topic.device_id, record.data["nonce"], at))
        elif record.type == "device.status":
            _firmware(plan, topic.device_id, record.data.get("firmware"), at)
        plan.events.append((
            at, topic.device_id, device.principal,
            self._registry.patient_at(topic.device_id, at), record.type,
            Jsonb(record.data, dumps=dumps), topic.channel, record.occurred_at is not None,
            message.received_at, event_ref(record),
        ))

    def _replays(self, plan: Plan) -> None:
        """Ask hubs for stored records the gateway has not seen (a gap, or a device back)."""
        now = max(plan.seen.values(), default=None)
        stored = self._registry.sequences({d for d, _ in plan.records} | set(plan.came_back))
        for (device_id, channel), seen in plan.records.items():
            known = stored.get((device_id, channel))
            numbers = set(seen.numbers)
            top = max(numbers)
            # Records above the last one stored must come without holes; the first hole
            # (between batches or inside this one) is where the hub must fetch from.
            floor = known.last if known is not None else min(numbers) - 1
            missing = next((n for n in range(floor + 1, top) if n not in numbers), None)
            ask_after = None if missing is None else missing - 1
            requested = known.requested_after if known else None
            requested_at = known.requested_at if known else None
            if ask_after is not None and now is not None and not (
                requested == ask_after and requested_at is not None
                and now - requested_at < REPLAY_BACKOFF
            ):
                plan.outbound.append(_fetch(seen.client_id, device_id, channel, ask_after))
                requested, requested_at = ask_after, now
            last = top if known is None else max(known.last, top)
            plan.sequence_updates.append((device_id, channel, last, requested, requested_at))
        for device_id, (client_id, _) in plan.came_back.items():
            for (dev, channel), known in stored.items():
                if dev == device_id and (dev, channel) not in plan.records:
                    plan.outbound.append(_fetch(client_id, dev, channel, known.last))


def _firmware(plan: Plan, device_id: str, firmware: object, at: datetime) -> None:
    """Note the firmware a status reported, the newest per device in the batch. A version
    the policy could not compare stays in the status event only: the registry keeps the
    last comparable one."""
    if not isinstance(firmware, str) or not _FIRMWARE_VERSION.fullmatch(firmware):
        return
    known = plan.firmware.get(device_id)
    if known is None or at >= known[1]:
        plan.firmware[device_id] = (firmware, at)


def event_ref(event: Event) -> str:
    """The device's own identity of an event (SCAIP ref, DC-09 or document sequence)."""
    for key in ("ref", "sequence", "seq"):
        value = event.data.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
    return ""


def _fetch(client_id: str, device_id: str, channel: str, after: int) -> Outbound:
    body = dumps({"device": device_id, "channel": channel, "after": after})
    return Outbound(down_topic(client_id, "fetch-records"), body.encode())


def parse_batch(batch: Sequence[Incoming], plan: Plan) -> list[tuple[Incoming, UpTopic]]:
    """Topics of a batch; bad ones become dead letters, down topics are ignored."""
    parsed = []
    for message in batch:
        try:
            topic = parse_up(message.topic)
        except TopicError as exc:
            plan.dead.append((message, None, Rejected("bad_topic", str(exc))))
            continue
        if topic is None:
            plan.ignored += 1
            continue
        parsed.append((message, topic))
    return parsed
