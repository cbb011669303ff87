"""Device clocks: estimate each device's offset and correct its readings for it.

BLE devices keep local wall-clock time with no zone, and their clocks drift or are never set.
A Date Time (0x2A08) report ("device.clock" event) read at a known moment (the hub's
``received-at``, else the gateway's receipt) gives the offset: device time minus true time.
Readings from a device whose clock is off by more than ``TOLERANCE`` are moved back by the
offset and flagged ``clock_corrected``; the offset is stored beside them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from adapters.model import Event, Observation

# Within this, a device clock counts as right: BLE time stamps have whole seconds and the
# hub's receipt time carries radio and queueing delay.
TOLERANCE = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class ClockReading:
    """A device's clock against true time."""

    offset_s: float
    checked_at: datetime


def read_clock(event: Event, zone: ZoneInfo, reference: datetime) -> ClockReading | None:
    """The offset a ``device.clock`` event shows, or None when the device's time is unknown."""
    text = event.data.get("device_time")
    if not isinstance(text, str):
        return None
    try:
        local = datetime.fromisoformat(text)
    except ValueError:
        return None
    device_utc = (local.replace(tzinfo=zone) if local.tzinfo is None else local).astimezone(UTC)
    return ClockReading((device_utc - reference).total_seconds(), reference)


def correct(observation: Observation, offset_s: float | None) -> tuple[Observation, float | None]:
    """The observation with its time corrected for a known clock offset, and the offset used."""
    if observation.measured_at is None or offset_s is None:
        return observation, None
    offset = timedelta(seconds=offset_s)
    if abs(offset) <= TOLERANCE:
        return observation, None
    corrected = replace(observation, measured_at=observation.measured_at - offset,
                        flags=(*observation.flags, "clock_corrected"))
    return corrected, offset_s
