"""The parts of fault injection every fault shares: messages, windows, the log, the base class."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from simulators.devices_base import DeviceState

# A held message beyond this many is released at once instead: a queue must never grow without
# bound, and releasing early is what a device with a full buffer does.
MAX_HELD = 5000


class Stateful(Protocol):
    """What a device fault needs of a device."""

    id: str
    state: DeviceState


@dataclass(frozen=True, slots=True)
class Message:
    """One payload on its way from a device; ``clean`` is the payload before a fault spoiled it."""

    device: str
    channel: str
    payload: bytes
    at: datetime
    clean: bytes | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """A span of virtual time; ``end`` None means until the end of the run."""

    start: datetime
    end: datetime | None = None

    def __contains__(self, at: object) -> bool:
        if not isinstance(at, datetime):
            return False
        return self.start <= at and (self.end is None or at < self.end)


def iso(at: datetime) -> str:
    """RFC 3339 in UTC with a Z, as the report writes times."""
    return at.isoformat().replace("+00:00", "Z")


class FaultLog:
    """Every injected fault as a JSON-ready dict, in order, plus a count per kind."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()

    def record(self, kind: str, device: str, at: datetime, channel: str | None = None,
               **detail: Any) -> None:
        """Note one injection."""
        entry: dict[str, Any] = {"fault": kind, "device": device, "at": iso(at)}
        if channel is not None:
            entry["channel"] = channel
        entry.update(detail)
        self.entries.append(entry)
        self.counts[kind] += 1


class Fault:
    """A fault stage; the base passes messages through and leaves devices alone."""

    kind: ClassVar[str] = "fault"

    def __init__(self, *, seed: int, probability: float = 1.0, window: Window | None = None,
                 channels: Collection[str] = (), owner: str | None = None) -> None:
        if not 0 <= probability <= 1:
            raise ValueError(f"fault {self.kind}: probability {probability} is not in 0..1")
        self.rng = random.Random(seed)
        self.probability, self.window, self.channels = probability, window, frozenset(channels)
        self.owner = owner  # the device or hub the fault belongs to, for the log

    def hits(self, message: Message, now: datetime) -> bool:
        """Whether this fault strikes ``message``: channel, window, then a seeded draw."""
        if self.channels and message.channel not in self.channels:
            return False
        if self.window is not None and now not in self.window:
            return False
        return self.rng.random() < self.probability

    def on_device(self, device: Stateful, now: datetime, log: FaultLog) -> None:
        """Change the device's state when the window opens or closes."""

    def apply(self, message: Message, now: datetime, log: FaultLog) -> list[Message]:
        """What leaves this stage for one message entering it at ``now``."""
        return [message]

    def release(self, now: datetime, log: FaultLog) -> list[Message]:
        """Held messages due at ``now``."""
        return []

    def drain(self, now: datetime, log: FaultLog) -> list[Message]:
        """Every held message (the run is over)."""
        return []
