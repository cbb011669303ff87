"""Simulated devices that send our JSON documents (docs/DEVICE_DOCUMENTS.md, version 1).

Spirometer and PEF meter sessions, a medication dispenser working through its dose schedule,
a digital lock opened by home-care staff, and the hub's own status. Documents are built with
``simulators.documents``; their ``at`` is the device clock (its free-running time when unset).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from simulators import documents
from simulators.devices_base import Device, Reading

_DOSE_TIMES = (time(8), time(13), time(18), time(22))  # local; four doses a day is common
_ROLL_DOSES = 56  # a two-week roll at four doses a day
_SUPPLY_LOW_AT = 8  # two days left: vendors warn 2-7 days ahead
_STAFF = ("staff-0421", "staff-0733", "staff-1187")
_VISITS = (time(7, 30), time(12), time(16, 30), time(21))  # home-care visits, local


class Spirometer(Device):
    """A home spirometer: one ``spirometry`` document per session (FEV1, FVC, PEF)."""

    kind = "spirometer"

    def measure(self, at: datetime) -> list[Reading]:
        """One session's best values."""
        blow = self.person.spirometry(at)
        grade = "A" if self.rng.random() < 0.8 else "C"
        return [("spirometer", documents.spirometry(
            self.stamp(at), fev1=blow.fev1, fvc=blow.fvc, pef=blow.pef, quality=grade,
            manoeuvres=3, seq=self.next_seq()))]


class PeakFlowMeter(Device):
    """A PEF meter: one ``peak_flow`` document per session."""

    kind = "peak_flow_meter"

    def measure(self, at: datetime) -> list[Reading]:
        """One session's best peak flow."""
        return [("spirometer", documents.spirometry(
            self.stamp(at), kind="peak_flow", pef=self.person.spirometry(at).pef,
            manoeuvres=3, seq=self.next_seq()))]


class _Timeline(Device):
    """A device whose events happen at their own times; ``readings`` sends those now due."""

    def setup(self) -> None:
        """No events planned yet."""
        self._planned: list[tuple[datetime, str, dict[str, object]]] = []
        self._planned_until = self._last

    def plan(self, at: datetime, kind: str, **fields: object) -> None:
        """Add one event at virtual time ``at``."""
        self._planned.append((at, kind, fields))

    def measure(self, at: datetime) -> list[Reading]:
        """Plan a day ahead, then send every event due, oldest first."""
        while self._planned_until <= at + timedelta(days=1):
            self.plan_day(self._planned_until)
            self._planned_until += timedelta(days=1)
        out: list[Reading] = []
        while True:
            # Handling one event may plan others (a dose's outcome), so sort each time.
            self._planned.sort(key=lambda item: item[0])
            if not self._planned or self._planned[0][0] > at:
                return out
            moment, kind, fields = self._planned.pop(0)
            reading = self.document(moment, kind, fields)
            if reading is not None:
                out.append(reading)

    def local(self, day: datetime, clock: time, jitter_min: float = 0) -> datetime:
        """Virtual time of a local wall-clock time on ``day``'s local date, with jitter."""
        date = day.astimezone(self.zone).date()
        moment = datetime.combine(date, clock, self.zone)
        return moment + timedelta(minutes=self.rng.uniform(-jitter_min, jitter_min))

    def plan_day(self, day: datetime) -> None:
        """Plan the events of the local day containing ``day``."""
        raise NotImplementedError

    def document(self, at: datetime, kind: str, fields: dict[str, object]) -> Reading | None:
        """The payload of one event; None for an internal step that sends nothing."""
        raise NotImplementedError


class MedicationDispenser(_Timeline):
    """A dose dispenser: due, dispensed, taken, late or missed, supply, door, jam and power."""

    kind = "medication_dispenser"
    drain_per_day = 0.0  # on mains; the battery only bridges power cuts

    def setup(self) -> None:
        """A full roll."""
        super().setup()
        self.remaining = _ROLL_DOSES
        self._refill_due = False

    def plan_day(self, day: datetime) -> None:
        """Plan the day's doses; the outcome of each is decided when it is due."""
        for clock in _DOSE_TIMES:
            moment = self.local(day, clock)
            if moment >= self.start:
                self.plan(moment, "_dose")
        if self.rng.random() < 0.05:
            cut = max(self.local(day, time(12), jitter_min=600), self.start)
            self.plan(cut, "power_lost", battery_percent=self.state.battery_percent)
            self.plan(cut + timedelta(minutes=self.rng.uniform(10, 120)), "power_restored")

    def document(self, at: datetime, kind: str, fields: dict[str, object]) -> Reading | None:
        """A dispenser document; a dose coming due only plans its lifecycle events."""
        if kind == "_dose":
            self._dose(at)
            return None
        dose = fields.get("dose")
        return ("dispenser", documents.dispenser_event(
            kind, self.stamp(at), dose=dose if isinstance(dose, documents.Dose) else None,
            remaining_doses=_int(fields.get("remaining_doses")),
            confirmation=_str(fields.get("confirmation")), reason=_str(fields.get("reason")),
            credential=_str(fields.get("credential")), fault_code=_str(fields.get("fault_code")),
            battery_percent=_int(fields.get("battery_percent")), seq=self.next_seq()))

    def _dose(self, at: datetime) -> None:
        """Plan one dose's events: refill first if staff are due, then due, dispensed, outcome."""
        if self._refill_due:
            self.plan(at - timedelta(minutes=30), "door_opened", credential=self.rng.choice(_STAFF))
            self.remaining, self._refill_due = _ROLL_DOSES, False
        dose = documents.Dose(f"D-{at.astimezone(self.zone):%Y%m%d-%H%M}",
                              self.stamp(at), compartment=(self.remaining % 28) + 1)
        self.plan(at, "dose_due", dose=dose)
        if self.remaining == 0:
            self.plan(at + timedelta(minutes=90), "dose_missed", dose=dose, reason="supply_empty")
            return
        if self.rng.random() < 0.02:
            self.plan(at, "jam", fault_code="E12")
            self.plan(at + timedelta(minutes=90), "dose_missed", dose=dose, reason="jam")
            return
        self.remaining -= 1
        self.plan(at, "dose_dispensed", dose=dose, remaining_doses=self.remaining)
        roll = self.rng.random()
        if roll < 0.85:
            taken = at + timedelta(minutes=self.rng.uniform(1, 20))
            self.plan(taken, "dose_taken", dose=dose, confirmation="button")
        else:
            self.plan(at + timedelta(minutes=30), "dose_late", dose=dose)
            if roll < 0.93:
                self.plan(at + timedelta(minutes=45), "dose_taken", dose=dose,
                          confirmation="sensor")
            else:
                self.plan(at + timedelta(minutes=90), "dose_missed", dose=dose)
        if self.remaining == _SUPPLY_LOW_AT:
            self.plan(at + timedelta(minutes=1), "supply_low", remaining_doses=self.remaining)
            self._refill_due = self.rng.random() < 0.7  # staff sometimes come too late
        elif self.remaining == 0:
            self.plan(at + timedelta(minutes=1), "supply_empty", remaining_doses=0)
            self._refill_due = True


class DigitalLock(_Timeline):
    """A door lock: staff unlock by app at each visit, it relocks itself; battery reports."""

    kind = "digital_lock"
    drain_per_day = 1.0

    def plan_day(self, day: datetime) -> None:
        """Four visits, now and then a mistyped code, and the daily battery report."""
        report = self.local(day, time(6))
        if report >= self.start:
            self.plan(report, "battery")
        for clock in _VISITS:
            opened = self.local(day, clock, jitter_min=15)
            if opened < self.start:
                continue
            if self.rng.random() < 0.05:
                self.plan(opened - timedelta(minutes=1), "failed_attempt", method="code",
                          attempts=1)
            self.plan(opened, "unlocked", method="app", credential=self.rng.choice(_STAFF))
            self.plan(opened + timedelta(minutes=self.rng.uniform(10, 40)), "locked",
                      method="auto")

    def document(self, at: datetime, kind: str, fields: dict[str, object]) -> Reading:
        """A lock document."""
        battery = self.state.battery_percent if kind == "battery" else None
        return ("lock", documents.lock_event(
            kind, self.stamp(at), method=_str(fields.get("method")),
            credential=_str(fields.get("credential")), attempts=_int(fields.get("attempts")),
            battery_percent=battery, seq=self.next_seq()))


class HubStatus(Device):
    """The hub itself (a phone or home gateway): a status document each interval."""

    kind = "hub"
    drain_per_day = 0.0  # mains powered
    sends_status = False  # ``measure`` sends it every time instead
    clock_source = "ntp"

    def setup(self) -> None:
        """The hub starts now; uptime counts from here."""
        self._booted = self._last

    def measure(self, at: datetime) -> list[Reading]:
        """One status: firmware, signal, uptime and clock."""
        if self.state.firmware != self._reported_firmware:
            self._booted, self._reported_firmware = at, self.state.firmware  # upgrade reboots
        return [("status", documents.device_status(
            self.stamp(at), rssi_dbm=round(self.rng.gauss(-67, 4)),
            firmware=self.state.firmware, uptime_s=int((at - self._booted).total_seconds()),
            clock_synced=self.state.clock_set,
            clock_source=self.clock_source if self.state.clock_set else "none",
            seq=self.next_seq()))]


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
