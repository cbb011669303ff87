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
from decimal import Context, Decimal

from adapters.catalogue import METRICS, Metric
from adapters.errors import DecodeError
from adapters.gatt_time import DATE_TIME_LENGTH, read_date_time
from adapters.ieee11073 import MedFloat, read_sfloat
from adapters.model import DecodeContext, Observation, Unit

CHANNEL = "ble/2a35"

_MANDATORY_LENGTH = 7  # flags + 3 SFLOAT

_UNIT_KPA = 0x01
_HAS_TIME_STAMP = 0x02
_HAS_PULSE_RATE = 0x04
_HAS_USER_ID = 0x08
_HAS_STATUS = 0x10

# Optional fields in wire order: flag bit, size in bytes, name used in reject reasons.
_OPTIONAL_FIELDS = (
    (_HAS_TIME_STAMP, DATE_TIME_LENGTH, "time stamp"),
    (_HAS_PULSE_RATE, 2, "pulse rate"),
    (_HAS_USER_ID, 1, "user id"),
    (_HAS_STATUS, 2, "measurement status"),
)

_UNKNOWN_USER = 255

# Measurement Status single-bit flags (status b0, b1, b2, b5).
_STATUS_BITS = (
    (0x0001, "body_movement"),
    (0x0002, "cuff_too_loose"),
    (0x0004, "irregular_pulse"),
    (0x0020, "improper_measurement_position"),
)
# Measurement Status b3-4: pulse rate range; 0 = within range adds no flag.
_PULSE_RANGE_SHIFT = 3
_PULSE_RANGE_FLAGS = {
    1: "pulse_rate_above_range",
    2: "pulse_rate_below_range",
    3: "pulse_rate_range_rfu",
}

# Plausible ranges, inclusive, in mmHg for pressures and /min for pulse rate. Home cuffs
# measure roughly 0-299 mmHg and 40-180/min; anything beyond these is almost surely an error.
_PRESSURE_MMHG = (Decimal(20), Decimal(300))
_PULSE_PER_MIN = (Decimal(20), Decimal(300))
_MMHG_PER_KPA = Decimal("7.50062")  # PROTOCOLS.md §2.1
# A private context, so a caller's decimal context (precision, traps) cannot round or raise.
_EXACT = Context(prec=28, Emin=-999_999, Emax=999_999)

_PRESSURE_KEYS = ("bp_systolic", "bp_diastolic", "bp_mean")
_PANEL = METRICS["bp_panel"].loinc  # 85354-9


def _required_length(flags: int) -> int:
    return _MANDATORY_LENGTH + sum(size for bit, size, _ in _OPTIONAL_FIELDS if flags & bit)


def _flag_names(flags: int) -> str:
    names = [name for bit, _, name in _OPTIONAL_FIELDS if flags & bit]
    names.append("kPa" if flags & _UNIT_KPA else "mmHg")
    return ", ".join(names)


def _status_flags(status: int) -> tuple[str, ...]:
    flags = [name for bit, name in _STATUS_BITS if status & bit]
    pulse_range = (status >> _PULSE_RANGE_SHIFT) & 0b11
    if pulse_range in _PULSE_RANGE_FLAGS:
        flags.append(_PULSE_RANGE_FLAGS[pulse_range])
    return tuple(flags)


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
    scale: Decimal,
    panel: str | None,
    device_user: int | None,
) -> Observation:
    if number.value is not None and _implausible(_EXACT.multiply(number.value, scale), bounds):
        flags = (*flags, "implausible")
    return Observation(
        code=metric.loinc,
        mdc=metric.mdc,
        value=number.value,
        unit=unit,
        measured_at=measured_at,
        flags=flags,
        absent_reason=number.absent,
        panel=panel,
        device_user=device_user,
    )


def decode(payload: bytes, ctx: DecodeContext) -> list[Observation]:
    """Decode one 0x2A35 indication into systolic, diastolic, mean and (if sent) pulse rate."""
    if len(payload) < _MANDATORY_LENGTH:
        raise DecodeError(
            CHANNEL, f"payload is {len(payload)} bytes; a measurement needs at least 7"
        )
    flags = payload[0]
    needed = _required_length(flags)
    if len(payload) < needed:
        raise DecodeError(
            CHANNEL,
            f"payload is {len(payload)} bytes but flags 0x{flags:02x} "
            f"({_flag_names(flags)}) need {needed}",
        )
    unit = Unit.KPA if flags & _UNIT_KPA else Unit.MMHG
    pressures = [read_sfloat(payload, 1 + 2 * index, CHANNEL) for index in range(3)]
    offset = _MANDATORY_LENGTH

    measured_at = None
    if flags & _HAS_TIME_STAMP:
        measured_at = read_date_time(payload, offset, ctx.zone, CHANNEL)
        offset += DATE_TIME_LENGTH
    pulse = None
    if flags & _HAS_PULSE_RATE:
        pulse = read_sfloat(payload, offset, CHANNEL)
        offset += 2
    device_user = None
    if flags & _HAS_USER_ID:
        device_user = None if payload[offset] == _UNKNOWN_USER else payload[offset]
        offset += 1
    message_flags: tuple[str, ...] = ()
    if flags & _HAS_STATUS:
        message_flags = _status_flags(int.from_bytes(payload[offset : offset + 2], "little"))
        offset += 2
    if len(payload) > offset:
        message_flags = (*message_flags, "trailing_bytes")

    # Plausibility is judged in mmHg whatever unit the cuff sent.
    scale = _MMHG_PER_KPA if unit is Unit.KPA else Decimal(1)
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
                scale=Decimal(1),
                panel=None,
                device_user=device_user,
            )
        )
    return observations
