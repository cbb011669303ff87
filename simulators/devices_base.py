"""What every simulated device shares: its state (battery, firmware, clock) and its base class.

A device is driven by virtual time: ``readings(at)`` returns the exact ``(channel, payload)``
pairs it sends at the virtual moment ``at``. Its own clock is ``at`` plus a skew, or unset
(after a battery swap or a reset), and its battery drains by the day.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import ClassVar
from zoneinfo import ZoneInfo

from simulators import documents, gatt
from simulators.physiology import STOCKHOLM, Person

LOW_BATTERY = 15  # percent; below this devices flag or report a low battery
# An RTC that lost its time restarts from its epoch; many BLE devices count from 2000-01-01.
RTC_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

Reading = tuple[str, bytes]


def derive_seed(*parts: object) -> int:
    """A stable 64-bit seed from parts (``hash()`` of a str changes between runs)."""
    digest = hashlib.sha256(":".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(slots=True)
class DeviceState:
    """What a device knows about itself: battery charge, firmware and its own clock."""

    battery: float = 100.0
    drain_per_day: float = 0.5
    firmware: str = "1.0.0"
    clock_offset: timedelta = timedelta(0)
    clock_set: bool = True
    clock_lost_at: datetime | None = None

    @property
    def battery_percent(self) -> int:
        """The charge as the device reports it, whole percent."""
        return max(0, min(100, round(self.battery)))

    @property
    def battery_low(self) -> bool:
        """True when the device would warn about its battery."""
        return self.battery_percent <= LOW_BATTERY

    def clock(self, at: datetime) -> datetime | None:
        """The device's time at virtual moment ``at``; None when its clock is not set."""
        return at + self.clock_offset if self.clock_set else None

    def free_running(self, at: datetime) -> datetime:
        """What an unset clock shows: its epoch plus the time since it was lost."""
        if self.clock_set or self.clock_lost_at is None:
            return at + self.clock_offset
        return RTC_EPOCH + (at - self.clock_lost_at)

    def lose_clock(self, at: datetime) -> None:
        """The clock stops knowing the date (battery swap, reset)."""
        self.clock_set, self.clock_lost_at = False, at

    def set_clock(self) -> None:
        """The clock is set again (by the hub or the network), without skew."""
        self.clock_set, self.clock_lost_at, self.clock_offset = True, None, timedelta(0)


def blank_time(payload: bytes, offset: int) -> bytes:
    """``payload`` with its 7-byte Date Time at ``offset`` set to the all-unknown date."""
    return payload[:offset] + bytes(7) + payload[offset + 7:]


class Device:
    """A simulated device; subclasses implement ``measure``."""

    kind: ClassVar[str] = "device"
    drain_per_day: ClassVar[float] = 0.5
    # The hub reports each peripheral's firmware and battery in a status document; alarm units
    # speak only their own protocol, so they set this False.
    sends_status: ClassVar[bool] = True
    clock_source: ClassVar[str] = "ble"

    def __init__(self, device_id: str, *, start: datetime, seed: int,
                 person: Person | None = None, model: str = "",
                 zone: ZoneInfo = STOCKHOLM, firmware: str = "1.0.0",
                 battery: float = 100.0) -> None:
        self.id = device_id
        self.start = start
        self.model = model or self.kind
        self.zone = zone
        self.rng = random.Random(seed)
        self.person = person or Person(seed=derive_seed(seed, "person"), start=start, zone=zone)
        self.state = DeviceState(battery=battery, drain_per_day=self.drain_per_day,
                                 firmware=firmware)
        self._last = start
        self.elapsed = timedelta(0)
        self._day: date | None = None
        self.first_of_day = True  # whether the reading being made is the first of a local day
        self._reported_firmware = self.state.firmware
        self._doc_seq = 0
        self.setup()

    def setup(self) -> None:
        """Class-specific state, set up after the common parts."""

    def readings(self, at: datetime) -> list[Reading]:
        """Everything the device sends at ``at``: measurements, then a status when due."""
        self.elapsed = max(timedelta(0), at - self._last)
        self.state.battery -= self.state.drain_per_day * self.elapsed.total_seconds() / 86400
        self._last = at
        day = at.astimezone(self.zone).date()
        self.first_of_day, self._day = day != self._day, day
        out = self.measure(at)
        upgraded = self.state.firmware != self._reported_firmware
        if self.sends_status and (upgraded or self.first_of_day):
            self._reported_firmware = self.state.firmware
            out.append(("status", self.status_document(at)))
        return out

    def measure(self, at: datetime) -> list[Reading]:
        """The class's own payloads at ``at``."""
        raise NotImplementedError

    def stamp(self, at: datetime) -> datetime:
        """The time a document carries: the device clock, or its free-running one when unset."""
        return self.state.free_running(at).astimezone(self.zone)

    def next_seq(self) -> int:
        """The next document sequence number."""
        self._doc_seq += 1
        return self._doc_seq

    def status_document(self, at: datetime) -> bytes:
        """A ``status`` document: battery, firmware and whether the clock is set."""
        return documents.device_status(
            self.stamp(at), battery_percent=self.state.battery_percent,
            firmware=self.state.firmware, clock_synced=self.state.clock_set,
            clock_source=self.clock_source if self.state.clock_set else "none",
        )


class BleDevice(Device):
    """A BLE peripheral: its measurements, plus battery (0x2A19) and clock (0x2A08) now and then."""

    def measure(self, at: datetime) -> list[Reading]:
        """Measurements, then battery on the first reading of the day or while low, then clock."""
        out = self.measurements(at)
        first = self.first_of_day
        if first or self.state.battery_low:
            out.append(("ble/2a19", gatt.encode_battery(
                gatt.BatteryLevel(self.state.battery_percent))))
        if first:
            clock = self.state.clock(at)
            wall = None if clock is None else clock.astimezone(self.zone).replace(tzinfo=None)
            out.append(("ble/2a08", gatt.encode_device_clock(gatt.DeviceClock(wall))))
        return out

    def measurements(self, at: datetime) -> list[Reading]:
        """The characteristic values of one measurement."""
        raise NotImplementedError

    def timed(self, at: datetime) -> tuple[datetime, bool]:
        """The moment to encode and whether the encoded date must be blanked (clock unset)."""
        clock = self.state.clock(at)
        return (at, True) if clock is None else (clock, False)
