"""A Bluetooth blood pressure monitor: genuine Blood Pressure Measurement (0x2A35) values.

Wire layout (GATT 0x2A35, little-endian): flags u8 (b0 kPa, b1 time stamp, b2 pulse rate,
b3 user id, b4 measurement status), systolic, diastolic and MAP as SFLOAT, then the optional
fields in flag order: Date Time (7 bytes, local wall clock), pulse rate SFLOAT, user id u8,
measurement status u16.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal

from adapters.gatt_time import encode_date_time
from adapters.ieee11073 import encode_sfloat
from adapters.model import DEFAULT_ZONE

FLAG_KPA, FLAG_TIME, FLAG_PULSE, FLAG_USER, FLAG_STATUS = 0x01, 0x02, 0x04, 0x08, 0x10
STATUS_BODY_MOVEMENT, STATUS_CUFF_LOOSE, STATUS_IRREGULAR = 0x0001, 0x0002, 0x0004


@dataclass(frozen=True, slots=True)
class BpReading:
    """What the cuff measured, in mmHg (or kPa when ``kpa``)."""

    systolic: Decimal
    diastolic: Decimal
    mean: Decimal
    pulse: Decimal | None = None
    measured_at: datetime | None = None
    user_id: int | None = None
    status: int | None = None
    kpa: bool = False


def encode(reading: BpReading, zone: tzinfo = DEFAULT_ZONE) -> bytes:
    """The 0x2A35 characteristic value for a reading."""
    flags = FLAG_KPA if reading.kpa else 0
    tail = b""
    if reading.measured_at is not None:
        flags |= FLAG_TIME
        tail += encode_date_time(reading.measured_at, zone)
    if reading.pulse is not None:
        flags |= FLAG_PULSE
        tail += encode_sfloat(reading.pulse)
    if reading.user_id is not None:
        flags |= FLAG_USER
        tail += bytes([reading.user_id])
    if reading.status is not None:
        flags |= FLAG_STATUS
        tail += reading.status.to_bytes(2, "little")
    pressures = b"".join(encode_sfloat(v) for v in (reading.systolic, reading.diastolic,
                                                   reading.mean))
    return bytes([flags]) + pressures + tail


class BloodPressureMonitor:
    """A cuff for one person: readings around a personal baseline, now and then a fault."""

    def __init__(self, *, seed: int, baseline: tuple[int, int, int] = (132, 84, 72)) -> None:
        self._rng = random.Random(seed)
        self._baseline = baseline

    def measure(self, at: datetime) -> BpReading:
        """One reading at ``at`` (whole seconds, as the cuff's clock has no finer)."""
        sys_base, dia_base, pulse_base = self._baseline
        systolic = sys_base + self._rng.randint(-12, 12)
        diastolic = min(dia_base + self._rng.randint(-8, 8), systolic - 20)
        # MAP ~ DBP + (SBP - DBP) / 3, as oscillometric cuffs report it, to one decimal.
        mean = (Decimal(diastolic) + (Decimal(systolic) - Decimal(diastolic)) / 3).quantize(
            Decimal("0.1"))
        status = None
        roll = self._rng.random()
        if roll < 0.05:
            status = STATUS_BODY_MOVEMENT
        elif roll < 0.08:
            status = STATUS_IRREGULAR
        return BpReading(
            systolic=Decimal(systolic), diastolic=Decimal(diastolic), mean=mean,
            pulse=Decimal(pulse_base + self._rng.randint(-6, 6)),
            measured_at=at.replace(microsecond=0), user_id=1, status=status,
        )


def payload_source(seed: int, zone: tzinfo = DEFAULT_ZONE) -> Callable[[datetime], bytes]:
    """A function giving a cuff's next 0x2A35 payload for a moment."""
    cuff = BloodPressureMonitor(seed=seed)

    def measure(at: datetime) -> bytes:
        return encode(cuff.measure(at), zone)

    return measure
