"""Simulated devices of issue 8 that send our home-test documents (docs/DEVICE_DOCUMENTS.md §8-).

A calprotectin home test, a home tonometer, a urine test-strip reader, digital night
supervision and a one-lead ECG. Each makes normal readings and, now and then, the faults its
hardware really has (an invalid test, a poor tonometer reading, a camera going offline, a
too-noisy ECG); transport and clock faults come from ``simulators.faults`` as for any device.
Payloads are built with ``simulators.documents_home``.
"""

from __future__ import annotations

import math
import random
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



class OneLeadEcg(Device):
    """A handheld one-lead ECG for AF screening (thumb electrodes, lead I; like the recorders
    of the Swedish STROKESTOP screening: 30 s, twice a day). Mostly sinus rhythm, paroxysmal
    atrial fibrillation in ``af_share`` of recordings, now and then too noisy to classify.

    Faults of the hardware, off unless a test sets them: ``truncated_share`` (the BLE transfer
    of a long recording broke off, so the hub forwards a cut document) and ``oversized_share``
    (a firmware that keeps recording past 30 s and sends the longer array)."""

    kind = "one_lead_ecg"
    af_share = 0.2
    noisy_share = 0.05
    truncated_share = 0.0
    oversized_share = 0.0

    def measure(self, at: datetime) -> list[Reading]:
        """One 30 s recording with the device's classification and mean heart rate."""
        roll = self.rng.random()
        rhythm = ("too_noisy" if roll < self.noisy_share else "atrial_fibrillation"
                  if roll < self.noisy_share + self.af_share else "sinus_rhythm")
        seconds = _ECG_SECONDS + (2 if self.rng.random() < self.oversized_share else 0)
        samples, rate = ecg_counts(self.rng, rhythm, self.person.traits.pulse, seconds)
        payload = docs.ecg(self.stamp(at), samples, sampling_frequency=_ECG_HZ,
                           uv_per_count=_UV_PER_COUNT, rhythm=rhythm,
                           heart_rate=None if rhythm == "too_noisy" else Decimal(rate),
                           seq=self.next_seq())
        if self.rng.random() < self.truncated_share:
            payload = payload[:self.rng.randrange(len(payload) // 4, len(payload) - 1)]
        return [("ecg", payload)]


_ECG_HZ = 300
_ECG_SECONDS = 30
_UV_PER_COUNT = Decimal(5)
# One beat as Gaussian waves around the R peak: (offset s, width s, amplitude uV), a textbook
# lead-I PQRST; atrial fibrillation has no P wave but a fibrillating baseline instead.
_PQRST = ((-0.20, 0.025, 110.0), (-0.035, 0.010, -90.0), (0.0, 0.012, 1000.0),
          (0.035, 0.010, -220.0), (0.26, 0.050, 280.0))


def ecg_counts(rng: random.Random, rhythm: str, pulse: float,
               seconds: int) -> tuple[list[int], int]:
    """A synthetic lead-I recording in ADC counts and its mean heart rate (beats/min).

    Sinus rhythm: R peaks at a steady rate with slight variability. Atrial fibrillation:
    irregularly irregular R-R intervals, no P wave, 4-9 Hz f waves. Too noisy: muscle noise
    and baseline wander swamp the beats."""
    af, noisy = rhythm == "atrial_fibrillation", rhythm == "too_noisy"
    rate = rng.gauss(95, 12) if af else rng.gauss(pulse, 4)
    total = seconds * _ECG_HZ
    signal = [0.0] * total
    beats, t = [], rng.uniform(0.1, 0.6)
    while t < seconds:
        beats.append(t)
        spread = rng.uniform(0.65, 1.35) if af else rng.gauss(1, 0.03)
        t += 60 / rate * spread
    waves = _PQRST[1:] if af else _PQRST
    for peak in beats:
        first = max(0, int((peak - 0.35) * _ECG_HZ))
        for index in range(first, min(total, int((peak + 0.45) * _ECG_HZ))):
            offset = index / _ECG_HZ - peak
            signal[index] += sum(height * math.exp(-((offset - at) / width) ** 2 / 2)
                                 for at, width, height in waves)
    f_hz, phase = rng.uniform(4, 9), rng.uniform(0, 2 * math.pi)
    noise = 150.0 if noisy else 10.0
    counts = []
    for index, value in enumerate(signal):
        moment = index / _ECG_HZ
        if af:
            value += 40 * math.sin(2 * math.pi * f_hz * moment + phase)
        if noisy:
            value += 300 * math.sin(2 * math.pi * 0.3 * moment + phase)
        counts.append(round((value + rng.gauss(0, noise)) / float(_UV_PER_COUNT)))
    mean_rate = 60 * (len(beats) - 1) / (beats[-1] - beats[0]) if len(beats) > 1 else rate
    return counts, round(mean_rate)
