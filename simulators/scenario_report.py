"""What a scenario run did: the ``Report`` and the thread-safe ``Recorder`` that fills it."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters import scaip
from adapters.errors import AdapterError
from adapters.registry import decode
from simulators.faults import FaultLog, Message
from simulators.faults_base import iso


@dataclass(slots=True)
class Report:
    """A run's outcome; every field is plain JSON (``to_json`` gives the dict)."""

    scenario: str
    seed: int
    start: str
    end: str
    stopped: bool = False
    # device -> channel -> messages published (spoiled, duplicated and replayed ones included)
    published: dict[str, dict[str, int]] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    fault_counts: dict[str, int] = field(default_factory=dict)
    # SCAIP <mrs> replies: device, ref, snu, latency_ms (None for a ref not awaited)
    replies: list[dict[str, Any]] = field(default_factory=list)
    unanswered: list[dict[str, Any]] = field(default_factory=list)
    # fetch-records served: hub, device, channel, after, served (records), or error
    replays: list[dict[str, Any]] = field(default_factory=list)
    # DC-09 account -> outcome (ACK, DUH, failed, attempts, NAK, timeout) -> count
    dc09: dict[str, dict[str, int]] = field(default_factory=dict)
    # Intact readings delivered, one per distinct payload and hub receipt time: what the store
    # should end up with.
    expected: list[dict[str, Any]] = field(default_factory=list)
    # Payloads a fault spoiled: the store keeps them if they decode, else dead-letters them.
    spoiled: list[dict[str, Any]] = field(default_factory=list)
    commands_dropped: int = 0

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


def _decodes(channel: str, payload: bytes) -> bool:
    try:
        decode(channel, payload)
    except AdapterError:
        return False
    return True


class Recorder:
    """Collects a run's counts; SCAIP replies and dropped commands arrive on MQTT threads."""

    def __init__(self, log: FaultLog) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._published: defaultdict[str, Counter[str]] = defaultdict(Counter)
        # A payload without a device time is a new reading each time the hub receives it, so
        # the hub's receipt time is part of what makes a reading distinct.
        self._expected: dict[tuple[str, str, bytes, datetime], dict[str, Any]] = {}
        self._spoiled: list[dict[str, Any]] = []
        self._pending: dict[str, tuple[str, float]] = {}  # SCAIP ref -> (device, sent at)
        self._replies: list[dict[str, Any]] = []
        self._replays: list[dict[str, Any]] = []
        self._dc09: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._dropped = 0

    def sent(self, message: Message) -> None:
        """Count one message sent (over MQTT or DC-09)."""
        self._published[message.device][message.channel] += 1

    def published(self, message: Message, received_at: datetime) -> None:
        """Count one publish and file it as expected in the store or as spoiled."""
        self.sent(message)
        self.delivered(message, received_at)

    def delivered(self, message: Message, received_at: datetime) -> None:
        """File a payload that reached the gateway (over MQTT or DC-09)."""
        if message.clean is None:
            key = (message.device, message.channel, message.payload, received_at)
            self._expected.setdefault(key, {
                "device": message.device, "channel": message.channel,
                "payload": message.payload.hex(), "at": iso(message.at),
                "received_at": iso(received_at),
            })
        else:
            self._spoiled.append({
                "device": message.device, "channel": message.channel,
                "payload": message.payload.hex(), "clean": message.clean.hex(),
                "decodes": _decodes(message.channel, message.payload),
            })

    def await_reply(self, message: Message) -> None:
        """Expect an ``<mrs>`` for a SCAIP request; called before publishing, as it may be quick."""
        try:
            ref = scaip.request_ref(message.payload)
        except AdapterError:
            return  # no readable ref: the gateway cannot answer it
        with self._lock:
            self._pending[ref] = (message.device, time.monotonic())

    def scaip_reply(self, client: str, payload: bytes) -> None:
        """Match an ``<mrs>`` to the request it answers (called on an MQTT thread)."""
        now = time.monotonic()
        try:
            reply = scaip.read_reply(payload)
        except AdapterError:
            with self._lock:
                self._replies.append({"client": client, "error": "unreadable <mrs>"})
            return
        with self._lock:
            device, sent = self._pending.pop(reply.ref, (client, None))
            latency = None if sent is None else round((now - sent) * 1000, 1)
            self._replies.append({"device": device, "ref": reply.ref, "snu": reply.snu,
                                  "latency_ms": latency})

    def awaiting(self) -> int:
        """SCAIP requests still without a reply."""
        with self._lock:
            return len(self._pending)

    def dropped_command(self) -> None:
        """A down command found the command queue full."""
        with self._lock:
            self._dropped += 1

    def replay(self, **entry: Any) -> None:
        """Note one fetch-records request and what was served."""
        self._replays.append(entry)

    def dc09(self, account: str, outcome: str, count: int = 1) -> None:
        """Count a DC-09 outcome for a unit."""
        self._dc09[account][outcome] += count

    def report(self, name: str, seed: int, start: datetime, end: datetime,
               stopped: bool) -> Report:
        """The finished report."""
        with self._lock:
            unanswered = [{"device": device, "ref": ref}
                          for ref, (device, _) in self._pending.items()]
            return Report(
                scenario=name, seed=seed, start=iso(start), end=iso(end), stopped=stopped,
                published={device: dict(sorted(channels.items()))
                           for device, channels in self._published.items()},
                faults=list(self.log.entries), fault_counts=dict(self.log.counts),
                replies=list(self._replies), unanswered=unanswered,
                replays=list(self._replays),
                dc09={account: dict(counts) for account, counts in self._dc09.items()},
                expected=list(self._expected.values()), spoiled=list(self._spoiled),
                commands_dropped=self._dropped,
            )
