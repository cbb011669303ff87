"""When simulated devices read: class defaults, local times of day with jitter, or intervals."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from zoneinfo import ZoneInfo


def _at(*clocks: str) -> tuple[clock_time, ...]:
    return tuple(clock_time.fromisoformat(text) for text in clocks)


# When each class measures unless the file says otherwise: local times of day, or an interval.
DEFAULT_TIMES: dict[str, tuple[clock_time, ...]] = {
    "blood_pressure_monitor": _at("07:30", "19:30"),
    "scale": _at("07:00"),
    "body_composition_scale": _at("07:05"),
    "pulse_oximeter": _at("09:00", "21:00"),
    "glucose_meter": _at("07:00", "09:00", "12:00", "14:00", "18:00", "21:00"),
    "thermometer": _at("08:00", "20:00"),
    "spirometer": _at("09:30"),
    "peak_flow_meter": _at("08:30", "20:30"),
}
DEFAULT_INTERVAL = timedelta(minutes=10)  # continuous oximeter; dispenser and lock poll this often
ALARM_INTERVAL = timedelta(hours=1)  # SCAIP heartbeats and DC-09 link tests
_JITTER = timedelta(minutes=10)  # people do not measure on the minute


class Schedule:
    """When a device reads: every ``interval`` from the start, or at local ``times`` daily."""

    def __init__(self, start: datetime, zone: ZoneInfo, seed: int, *,
                 interval: timedelta | None = None, times: tuple[clock_time, ...] = ()) -> None:
        if interval is None and not times:
            raise ValueError("a schedule needs an interval or times of day")
        self._start, self._zone, self._rng = start, zone, random.Random(seed)
        self._interval, self._times = interval, tuple(sorted(times))
        self._count, self._slot = 0, 0
        self._date: date = start.astimezone(zone).date()
        self.next_at = self._advance()

    def _advance(self) -> datetime:
        if self._interval is not None:
            self._count += 1
            return self._start + (self._count - 1) * self._interval
        while True:
            if self._slot == len(self._times):
                self._slot, self._date = 0, self._date + timedelta(days=1)
            nominal = datetime.combine(self._date, self._times[self._slot], self._zone)
            self._slot += 1
            if nominal >= self._start:
                return (nominal + self._rng.random() * _JITTER).astimezone(UTC)

    def due(self, now: datetime) -> list[datetime]:
        """The reading times up to ``now`` not yet taken."""
        due = []
        while self.next_at <= now:
            due.append(self.next_at)
            self.next_at = self._advance()
        return due
