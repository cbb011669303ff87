"""Composable fault injection over a stream of messages in virtual time, seeded and recorded.

A ``FaultChain`` runs its faults in order over each ``Message`` (device, channel, payload and
the virtual time it was produced). Message faults spoil, copy or hold messages: truncate,
corrupt (bit flips), duplicate, out_of_order (released after the next ones on its channel),
late (released after a delay) and offline (everything held in a window, then a burst). Device
faults change a device's state in a window: clock_skew, unset_clock, low_battery and
firmware_upgrade; the device then sends what such a device sends. Each fault fires with a
probability and/or within a time window, draws from its own seeded generator (so adding one
fault does not change another's draws), and records every injection in the ``FaultLog``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from simulators.faults_base import MAX_HELD, Fault, FaultLog, Message, Stateful, Window, iso
from simulators.faults_state import ClockSkew, FirmwareUpgrade, LowBattery, UnsetClock


def _spoil(message: Message, payload: bytes) -> Message:
    return replace(message, payload=payload, clean=message.clean or message.payload)


class Truncate(Fault):
    """Cuts the payload short, as a dropped BLE packet or a broken link does."""

    kind = "truncate"

    def apply(self, message: Message, now: datetime, log: FaultLog) -> list[Message]:
        """A strict prefix of the payload."""
        if not message.payload or not self.hits(message, now):
            return [message]
        kept = self.rng.randrange(len(message.payload))
        log.record(self.kind, message.device, now, message.channel,
                   length=len(message.payload), kept=kept)
        return [_spoil(message, message.payload[:kept])]


class Corrupt(Fault):
    """Flips random bits, as electrical noise or a buggy firmware does."""

    kind = "corrupt"

    def __init__(self, *, bits: int = 1, **common: Any) -> None:
        super().__init__(**common)
        if bits < 1:
            raise ValueError(f"fault {self.kind}: bits must be at least 1")
        self.bits = bits

    def apply(self, message: Message, now: datetime, log: FaultLog) -> list[Message]:
        """The payload with ``bits`` distinct bits flipped."""
        if not message.payload or not self.hits(message, now):
            return [message]
        data = bytearray(message.payload)
        flipped = sorted(self.rng.sample(range(len(data) * 8), min(self.bits, len(data) * 8)))
        for bit in flipped:
            data[bit // 8] ^= 1 << (bit % 8)
        log.record(self.kind, message.device, now, message.channel, bits=flipped)
        return [_spoil(message, bytes(data))]


class Duplicate(Fault):
    """Sends a message again, byte for byte, as a hub retrying after a lost ack does."""

    kind = "duplicate"

    def __init__(self, *, copies: int = 1, **common: Any) -> None:
        super().__init__(**common)
        if copies < 1:
            raise ValueError(f"fault {self.kind}: copies must be at least 1")
        self.copies = copies

    def apply(self, message: Message, now: datetime, log: FaultLog) -> list[Message]:
        """The message and its copies."""
        if not self.hits(message, now):
            return [message]
        log.record(self.kind, message.device, now, message.channel, copies=self.copies)
        return [message] * (1 + self.copies)


class OutOfOrder(Fault):
    """Holds a message until ``depth`` later ones from its device and channel have passed it."""

    kind = "out_of_order"

    def __init__(self, *, depth: int = 1, **common: Any) -> None:
        super().__init__(**common)
        if depth < 1:
            raise ValueError(f"fault {self.kind}: depth must be at least 1")
        self.depth = depth
        self._held: list[list[Any]] = []  # [message, later messages still to pass]

    def apply(self, message: Message, now: datetime, log: FaultLog) -> list[Message]:
        """Hold this one, or pass it and release any held one it was the last to overtake."""
        out = [message]
        for entry in self._held:
            if (entry[0].device, entry[0].channel) == (message.device, message.channel):
                entry[1] -= 1
        out += [entry[0] for entry in self._held if entry[1] <= 0]
        self._held = [entry for entry in self._held if entry[1] > 0]
        if len(self._held) < MAX_HELD and self.hits(message, now):
            log.record(self.kind, message.device, now, message.channel, depth=self.depth)
            self._held.append([message, self.depth])
            out.remove(message)
        return out

    def drain(self, now: datetime, log: FaultLog) -> list[Message]:
        """Everything still held."""
        held, self._held = [entry[0] for entry in self._held], []
        return held


class Late(Fault):
    """Holds a message for ``delay`` of virtual time, as a store-and-forward hub does."""

    kind = "late"

    def __init__(self, *, delay: timedelta = timedelta(hours=1), **common: Any) -> None:
        super().__init__(**common)
        self.delay = delay
        self._held: list[tuple[datetime, Message]] = []

    def apply(self, message: Message, now: datetime, log: FaultLog) -> list[Message]:
        """Hold it until ``now + delay``."""
        if len(self._held) >= MAX_HELD or not self.hits(message, now):
            return [message]
        log.record(self.kind, message.device, now, message.channel,
                   delay_s=int(self.delay.total_seconds()))
        self._held.append((now + self.delay, message))
        return []

    def release(self, now: datetime, log: FaultLog) -> list[Message]:
        """Those whose delay is over, in the order they were held."""
        due = [message for until, message in self._held if until <= now]
        self._held = [(until, message) for until, message in self._held if until > now]
        return due

    def drain(self, now: datetime, log: FaultLog) -> list[Message]:
        """Everything still held."""
        held, self._held = [message for _, message in self._held], []
        return held


class Offline(Fault):
    """No connection in the window: every message is held, then sent in one burst."""

    kind = "offline"

    def __init__(self, *, window: Window, **common: Any) -> None:
        super().__init__(window=window, **common)
        self._held: list[Message] = []

    def apply(self, message: Message, now: datetime, log: FaultLog) -> list[Message]:
        """Hold it while offline."""
        if self.window is None or now not in self.window or len(self._held) >= MAX_HELD:
            return [message]
        self._held.append(message)
        return []

    def release(self, now: datetime, log: FaultLog) -> list[Message]:
        """The burst, once the window has closed."""
        if not self._held or (self.window is not None and now in self.window):
            return []
        return self._burst(now, log)

    def drain(self, now: datetime, log: FaultLog) -> list[Message]:
        """The burst at the end of the run, if the window never closed."""
        return self._burst(now, log) if self._held else []

    def _burst(self, now: datetime, log: FaultLog) -> list[Message]:
        held, self._held = self._held, []
        assert self.window is not None
        log.record(self.kind, self.owner or held[0].device, self.window.start, held=len(held),
                   burst_at=iso(now), devices=sorted({message.device for message in held}))
        return held


FAULTS: dict[str, type[Fault]] = {
    cls.kind: cls
    for cls in (Truncate, Corrupt, Duplicate, OutOfOrder, Late, Offline, ClockSkew, UnsetClock,
                LowBattery, FirmwareUpgrade)
}


class FaultChain:
    """Faults applied in order; a message released by one stage goes on through the later ones."""

    def __init__(self, faults: Sequence[Fault], log: FaultLog) -> None:
        self.faults, self.log = list(faults), log

    def prepare(self, device: Stateful, now: datetime) -> None:
        """Let device faults change ``device`` before it is read at ``now``."""
        for fault in self.faults:
            fault.on_device(device, now, self.log)

    def push(self, messages: Sequence[Message], now: datetime, first: int = 0) -> list[Message]:
        """Pass messages through the stages from ``first`` on."""
        current = list(messages)
        for fault in self.faults[first:]:
            current = [out for message in current for out in fault.apply(message, now, self.log)]
        return current

    def release(self, now: datetime) -> list[Message]:
        """Held messages due at ``now``, through the stages after the one that held them."""
        out: list[Message] = []
        for index, fault in enumerate(self.faults):
            out += self.push(fault.release(now, self.log), now, index + 1)
        return out

    def drain(self, now: datetime) -> list[Message]:
        """Everything still held anywhere, in stage order."""
        out: list[Message] = []
        for index, fault in enumerate(self.faults):
            released = fault.release(now, self.log) + fault.drain(now, self.log)
            out += self.push(released, now, index + 1)
        return out


__all__ = [
    "FAULTS", "MAX_HELD", "ClockSkew", "Corrupt", "Duplicate", "Fault", "FaultChain",
    "FaultLog", "FirmwareUpgrade", "Late", "LowBattery", "Message", "Offline", "OutOfOrder",
    "Stateful", "Truncate", "UnsetClock", "Window",
]
