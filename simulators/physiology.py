"""Plausible physiology for one simulated person, reproducible from a seed.

Each person has baselines and trends: blood pressure drifting up (untreated hypertension),
weight gain (for example fluid retention in heart failure), nightly SpO2 dips (sleep apnoea),
glucose that follows meals, a temperature with a daily rhythm, and lung function with day-to-day
variation. Values are drawn per call from a seeded generator, so a scenario replays exactly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal
from zoneinfo import ZoneInfo

STOCKHOLM = ZoneInfo("Europe/Stockholm")


@dataclass(frozen=True, slots=True)
class Traits:
    """A person's baselines and trends."""

    systolic: float = 138.0
    diastolic: float = 86.0
    pulse: float = 72.0
    systolic_per_day: float = 0.4  # hypertensive trend, mmHg per day
    weight_kg: float = 82.0
    weight_kg_per_day: float = 0.15  # gain, kg per day
    height_m: float = 1.74
    spo2: float = 96.0
    night_dip: float = 5.0  # SpO2 points lost at the worst of the night
    glucose_mmol: float = 6.5
    temperature: float = 36.8
    fev1_l: float = 2.6
    fvc_l: float = 3.4
    pef_l_min: float = 420.0


@dataclass(frozen=True, slots=True)
class BloodPressure:
    """One cuff reading in mmHg and /min."""

    systolic: Decimal
    diastolic: Decimal
    mean: Decimal
    pulse: Decimal


@dataclass(frozen=True, slots=True)
class Spirometry:
    """One blow: FEV1 and FVC in L, PEF in L/min."""

    fev1: Decimal
    fvc: Decimal
    pef: Decimal


class Person:
    """A simulated person; ``start`` anchors the trends."""

    def __init__(self, *, seed: int, start: datetime, traits: Traits | None = None,
                 zone: tzinfo = STOCKHOLM) -> None:
        self.traits = traits or Traits()
        self._rng = random.Random(seed)
        self._start = start
        self._zone = zone

    def _days(self, at: datetime) -> float:
        return (at - self._start).total_seconds() / 86400

    def _hour(self, at: datetime) -> float:
        local = at.astimezone(self._zone)
        return local.hour + local.minute / 60

    def blood_pressure(self, at: datetime) -> BloodPressure:
        """A reading with the trend, a morning surge and measurement noise."""
        t = self.traits
        surge = 6.0 if 6 <= self._hour(at) < 10 else 0.0
        systolic = round(t.systolic + t.systolic_per_day * self._days(at) + surge
                         + self._rng.gauss(0, 6))
        diastolic = min(round(t.diastolic + 0.4 * surge + self._rng.gauss(0, 4)), systolic - 20)
        mean = (Decimal(diastolic) + (Decimal(systolic) - Decimal(diastolic)) / 3).quantize(
            Decimal("0.1"))
        pulse = round(t.pulse + self._rng.gauss(0, 4))
        return BloodPressure(Decimal(systolic), Decimal(diastolic), mean, Decimal(pulse))

    def weight(self, at: datetime) -> Decimal:
        """Body weight in kg, to the scale's 0.005 kg resolution."""
        kg = self.traits.weight_kg + self.traits.weight_kg_per_day * self._days(at)
        kg += self._rng.gauss(0, 0.25)
        return (Decimal(round(kg / 0.005)) * Decimal("0.005")).normalize()

    def spo2(self, at: datetime) -> tuple[Decimal, Decimal]:
        """SpO2 % and pulse rate: dips at night, deepest around 03:00."""
        hour = self._hour(at)
        dip = 0.0
        if hour < 6:
            dip = self.traits.night_dip * math.sin(math.pi * hour / 6)
        value = min(100.0, self.traits.spo2 - dip + self._rng.gauss(0, 0.8))
        pulse = self.traits.pulse - (8 if hour < 6 else 0) + self._rng.gauss(0, 3)
        return Decimal(round(value)), Decimal(round(pulse))

    def glucose(self, at: datetime) -> Decimal:
        """Capillary glucose in mmol/L, higher in the two hours after a meal."""
        hour = self._hour(at)
        after_meal = any(0 <= hour - meal < 2 for meal in (7.5, 12.0, 18.0))
        value = self.traits.glucose_mmol + (3.0 if after_meal else 0.0)
        value += self._rng.gauss(0, 0.6)
        return Decimal(str(round(max(value, 2.5), 1)))

    def temperature(self, at: datetime) -> Decimal:
        """Body temperature in °C with a late-afternoon peak."""
        rhythm = 0.3 * math.sin(2 * math.pi * (self._hour(at) - 11) / 24)
        value = self.traits.temperature + rhythm + self._rng.gauss(0, 0.1)
        return Decimal(str(round(value, 2)))

    def spirometry(self, at: datetime) -> Spirometry:
        """One best blow of a session."""
        t = self.traits
        factor = 1 + self._rng.gauss(0, 0.04)
        return Spirometry(
            fev1=Decimal(str(round(t.fev1_l * factor, 2))),
            fvc=Decimal(str(round(t.fvc_l * factor, 2))),
            pef=Decimal(round(t.pef_l_min * factor)),
        )
