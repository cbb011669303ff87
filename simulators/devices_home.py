"""Simulated devices of issue 8 that send our home-test documents (docs/DEVICE_DOCUMENTS.md §8-).

A calprotectin home test, a home tonometer, a urine test-strip reader and digital night
supervision. Each makes normal readings and, now and then, the faults its hardware really has
(an invalid test, a poor tonometer reading, a camera going offline); transport and clock
faults come from ``simulators.faults`` as for any device.
Payloads are built with ``simulators.documents_home``.
"""

from __future__ import annotations

import math
from datetime import datetime, time, timedelta
from decimal import Decimal

from simulators import documents_home as docs
from simulators.devices_base import Device, Reading

_IBDOC_RANGE = (Decimal(30), Decimal(1000))  # ug/g, the reader's measuring range
_CHECKS = (time(22, 30), time(0, 30), time(2, 30), time(4, 30))  # night rounds, local
_STAFF = ("staff-0421", "staff-0733", "staff-1187")
_ORDINAL = ("negative", "trace", "1+", "2+", "3+")


class CalprotectinTest(Device):
    """An IBD home test read by a phone: mostly remission, sometimes a flare, now and then an
    invalid cassette (control line missing)."""

    kind = "calprotectin_test"

    def measure(self, at: datetime) -> list[Reading]:
        """One test: a result in ug/g, clamped to the reader's range with a comparator."""
        if self.rng.random() < 0.05:
            return [("calprotectin", docs.calprotectin(
                self.stamp(at), lot="L2405", reason="control_line_missing",
                seq=self.next_seq()))]
        flare = self.rng.random() < 0.15
        value = Decimal(round(math.exp(self.rng.gauss(6.2 if flare else 3.8, 0.5))))
        comparator = None
        if value < _IBDOC_RANGE[0]:
            value, comparator = _IBDOC_RANGE[0], "<"
        elif value > _IBDOC_RANGE[1]:
            value, comparator = _IBDOC_RANGE[1], ">"
        return [("calprotectin", docs.calprotectin(
            self.stamp(at), value, comparator=comparator, lot="L2405", seq=self.next_seq()))]


class Tonometer(Device):
    """A rebound tonometer used at home (iCare HOME-like): both eyes, sometimes a poor reading."""

    kind = "tonometer"

    def measure(self, at: datetime) -> list[Reading]:
        """One session, right eye then left; a small share of low-quality sessions."""
        right = Decimal(round(self.rng.gauss(17, 2.5)))
        left = Decimal(round(self.rng.gauss(16, 2.5)))
        quality = "low" if self.rng.random() < 0.08 else "high"
        return [("tonometer", docs.intraocular_pressure(
            self.stamp(at), right=right, left=left, quality=quality, position="sitting",
            seq=self.next_seq()))]


class UrineReader(Device):
    """A urine test-strip reader: mostly normal strips, sometimes signs of infection."""

    kind = "urine_reader"

    def measure(self, at: datetime) -> list[Reading]:
        """One strip: ordinal pads, pH and specific gravity."""
        infection = self.rng.random() < 0.1
        results: dict[str, str | Decimal] = {
            "glucose": "negative",
            "protein": self.rng.choice(_ORDINAL[:2]),
            "blood": self.rng.choice(_ORDINAL[1:3]) if infection else "negative",
            "leukocytes": self.rng.choice(_ORDINAL[2:]) if infection else "negative",
            "nitrite": "positive" if infection else "negative",
            "ketones": "negative",
            "ph": Decimal(self.rng.choice(("5.0", "5.5", "6.0", "6.5", "7.0"))),
            "specific_gravity": Decimal(self.rng.choice(("1.005", "1.010", "1.015", "1.020"))),
        }
        return [("urinalysis", docs.urinalysis(self.stamp(at), results, strip="Combur-7",
                                               seq=self.next_seq()))]


class NightSupervision(Device):
    """Digital night supervision (a camera or sensor in the bedroom): each scheduled check is
    done, found the person out of bed, or missed; the camera sometimes goes offline.
    Events only: the simulator, like the channel, never sends an image."""

    kind = "night_supervision"
    drain_per_day = 0.0  # mains powered

    def setup(self) -> None:
        """Nothing sent yet."""
        self._done_until = self._last

    def measure(self, at: datetime) -> list[Reading]:
        """The events of every scheduled check between the last call and ``at``."""
        out: list[Reading] = []
        day = self._done_until - timedelta(days=1)
        while day <= at + timedelta(days=1):  # local dates overlapping the window
            for clock in _CHECKS:
                local = datetime.combine(day.astimezone(self.zone).date(), clock, self.zone)
                if self._done_until < local <= at:
                    out.extend(self._check(local))
            day += timedelta(days=1)
        self._done_until = max(self._done_until, at)
        return out

    def _check(self, due: datetime) -> list[Reading]:
        check_id = f"C-{due:%Y%m%d-%H%M}"
        roll = self.rng.random()
        if roll < 0.03:  # the camera lost its network; the check cannot be made
            back = due + timedelta(minutes=self.rng.uniform(20, 90))
            return [self._event("camera_offline", due, None), self._event(
                        "check_missed", due + timedelta(minutes=15), check_id, due),
                    self._event("camera_online", back, None)]
        done = due + timedelta(minutes=self.rng.uniform(0, 10))
        kind = "not_in_bed" if roll < 0.10 else "check_done"
        return [self._event(kind, done, check_id, due)]

    def _event(self, kind: str, at: datetime, check_id: str | None,
               due: datetime | None = None) -> Reading:
        credential = self.rng.choice(_STAFF) if kind in ("check_done", "not_in_bed") else None
        return ("night_supervision", docs.night_supervision(
            kind, self.stamp(at), check_id=check_id, scheduled_at=due, method="camera",
            credential=credential, seq=self.next_seq()))

