"""Device faults: a device state changed while a window is open (clock, battery, firmware)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from simulators.devices_base import DeviceState
from simulators.faults_base import Fault, FaultLog, Stateful, Window


class _StateFault(Fault):
    """A fault that sets a device state when its window opens and undoes it when it closes."""

    def __init__(self, *, window: Window, **common: Any) -> None:
        super().__init__(window=window, **common)
        self._active: set[str] = set()
        self._done: set[str] = set()

    def on_device(self, device: Stateful, now: datetime, log: FaultLog) -> None:
        """Begin or end the fault for this device."""
        assert self.window is not None
        if device.id not in self._active and device.id not in self._done and now in self.window:
            self._active.add(device.id)
            log.record(self.kind, device.id, now, **self.begin(device.state, now))
        elif device.id in self._active and now not in self.window:
            self._active.discard(device.id)
            self._done.add(device.id)
            detail = self.end(device.state, now)
            if detail is not None:
                log.record(self.kind, device.id, now, ended=True, **detail)

    def begin(self, state: DeviceState, now: datetime) -> dict[str, Any]:
        """Change the state; the detail to record."""
        raise NotImplementedError

    def end(self, state: DeviceState, now: datetime) -> dict[str, Any] | None:
        """Undo the change; the detail to record, or None when nothing is undone."""
        return None


class ClockSkew(_StateFault):
    """The device clock runs ``offset`` ahead (behind when negative) until resynchronised."""

    kind = "clock_skew"

    def __init__(self, *, offset: timedelta, **common: Any) -> None:
        super().__init__(**common)
        self.offset = offset

    def begin(self, state: DeviceState, now: datetime) -> dict[str, Any]:
        """Skew the clock."""
        state.clock_offset = self.offset
        return {"offset_s": int(self.offset.total_seconds())}

    def end(self, state: DeviceState, now: datetime) -> dict[str, Any] | None:
        """Resynchronise."""
        state.clock_offset = timedelta(0)
        return {"offset_s": 0}


class UnsetClock(_StateFault):
    """The clock loses its date (a battery swap) until the hub or network sets it again."""

    kind = "unset_clock"

    def begin(self, state: DeviceState, now: datetime) -> dict[str, Any]:
        """Lose the date."""
        state.lose_clock(now)
        return {}

    def end(self, state: DeviceState, now: datetime) -> dict[str, Any] | None:
        """Set it again."""
        state.set_clock()
        return {}


class LowBattery(_StateFault):
    """The battery drops to ``level`` percent; it is replaced (100 %) when the window closes."""

    kind = "low_battery"

    def __init__(self, *, level: int = 8, **common: Any) -> None:
        super().__init__(**common)
        self.level = level

    def begin(self, state: DeviceState, now: datetime) -> dict[str, Any]:
        """Drain it."""
        state.battery = float(self.level)
        return {"level": self.level}

    def end(self, state: DeviceState, now: datetime) -> dict[str, Any] | None:
        """Replace it."""
        state.battery = 100.0
        return {"level": 100}


class FirmwareUpgrade(_StateFault):
    """The device installs ``version`` when the window opens (and keeps it)."""

    kind = "firmware_upgrade"

    def __init__(self, *, version: str, **common: Any) -> None:
        super().__init__(**common)
        self.version = version

    def begin(self, state: DeviceState, now: datetime) -> dict[str, Any]:
        """Upgrade."""
        before, state.firmware = state.firmware, self.version
        return {"from": before, "to": self.version}
