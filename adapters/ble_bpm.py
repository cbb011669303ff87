"""Blood Pressure Measurement (GATT 0x2A35, indicated by a BLE cuff) -> canonical observations.

Wire layout (PROTOCOLS.md §2.1, blood_pressure_measurement.xml), little-endian, walked with a
running offset because every optional field shifts the ones after it:

    [0]      flags u8: b0 unit (0 mmHg, 1 kPa), b1 time stamp, b2 pulse rate, b3 user id,
             b4 measurement status, b5-7 RFU
    [1..6]   systolic, diastolic, mean arterial pressure: 3 x SFLOAT in the flagged unit
    +7       time stamp (Date Time 0x2A08)                   if b1
    +2       pulse rate SFLOAT, always beats/min             if b2
    +1       user id u8, 255 = unknown user                  if b3
    +2       measurement status u16                          if b4

Deliberate choices:

* Trailing bytes after the last flagged field are tolerated, as Nordic's decoder does, so a
  cuff that pads its indication still reports; every observation then carries the flag
  ``trailing_bytes`` so the oddity stays visible downstream.
* RFU bits (flags b5-7, status b6-15) are ignored, as the Bluetooth specifications require
  of a receiver; pulse-rate range value 3 (RFU) is reported as ``pulse_rate_range_rfu``.
* Values outside the plausible range are kept and flagged ``implausible``; special SFLOAT
  values become value None with an absent reason and are never range-checked.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from adapters.ble_bp_layout import EXACT, MMHG_PER_KPA, read_frame
from adapters.catalogue import METRICS, Metric
from adapters.ieee11073 import MedFloat
from adapters.model import DecodeContext, Observation, Unit

CHANNEL = "ble/2a35"

# Plausible ranges, inclusive, in mmHg for pressures and /min for pulse rate. Home cuffs
# measure roughly 0-299 mmHg and 40-180/min; anything beyond these is almost surely an error.
_PRESSURE_MMHG = (Decimal(20), Decimal(300))
_PULSE_PER_MIN = (Decimal(20), Decimal(300))

_PRESSURE_KEYS = ("bp_systolic", "bp_diastolic", "bp_mean")
_PANEL = METRICS["bp_panel"].loinc  # 85354-9


def _implausible(value: Decimal, bounds: tuple[Decimal, Decimal]) -> bool:
    low, high = bounds
    return not low <= value <= high


def _observation(
    metric: Metric,
    number: MedFloat,
    unit: Unit,
    *,
    measured_at: datetime | None,
    flags: tuple[str, ...],
    bounds: tuple[Decimal, Decimal],
    scale: Decimal | None,
    panel: str | None,
    device_user: int | None,
) -> Observation:
    value = number.value
    if value is not None and _implausible(
            value if scale is None else EXACT.multiply(value, scale), bounds):
        flags = (*flags, "implausible")
    return Observation(
        code=metric.loinc,
        mdc=metric.mdc,
        value=value,
        unit=unit,
        measured_at=measured_at,
        flags=flags,
        absent_reason=number.absent,
        panel=panel,
        device_user=device_user,
    )


def decode(payload: bytes, ctx: DecodeContext) -> list[Observation]:
    """Decode one 0x2A35 indication into systolic, diastolic, mean and (if sent) pulse rate."""
    frame = read_frame(payload, ctx, CHANNEL, "a measurement", slots=3)
    unit, pressures, measured_at = frame.unit, frame.slots, frame.at
    pulse, device_user = frame.pulse, frame.user
    message_flags = (*frame.status, "trailing_bytes") if frame.trailing else frame.status

    # Plausibility is judged in mmHg whatever unit the cuff sent (None: it sent mmHg).
    scale = MMHG_PER_KPA if unit is Unit.KPA else None
    observations = [
        _observation(
            METRICS[key],
            number,
            unit,
            measured_at=measured_at,
            flags=message_flags,
            bounds=_PRESSURE_MMHG,
            scale=scale,
            panel=_PANEL,
            device_user=device_user,
        )
        for key, number in zip(_PRESSURE_KEYS, pressures, strict=True)
    ]
    if pulse is not None:
        observations.append(
            _observation(
                METRICS["pulse_rate_cuff"],
                pulse,
                Unit.PER_MIN,
                measured_at=measured_at,
                flags=message_flags,
                bounds=_PULSE_PER_MIN,
                scale=None,
                panel=None,
                device_user=device_user,
            )
        )
    return observations
