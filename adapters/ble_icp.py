"""Intermediate Cuff Pressure (GATT 0x2A36, notified while a cuff inflates) -> one event.

Wire layout (PROTOCOLS.md §2.1, intermediate_cuff_pressure.xml): the 0x2A35 layout, little-endian,
walked with a running offset because every optional field shifts the ones after it:

    [0]      flags u8: b0 unit (0 mmHg, 1 kPa), b1 time stamp, b2 pulse rate, b3 user id,
             b4 measurement status, b5-7 RFU
    [1..2]   current cuff pressure SFLOAT in the flagged unit
    [3..6]   the diastolic and MAP slots of 0x2A35: unused here, sent as 0x0000 or NaN (trap 8),
             so they are skipped unread
    +7       time stamp (Date Time 0x2A08)                   if b1
    +2       pulse rate SFLOAT, always beats/min             if b2
    +1       user id u8, 255 = unknown user                  if b3
    +2       measurement status u16                          if b4

A cuff pressure is the pressure of an inflating cuff, never a blood pressure, so it becomes the
event ``bp.cuff_pressure`` (PROTOCOLS.md §7 rule 5) and never an observation. Its data:
``pressure`` (Decimal, or None with ``absent_reason`` for a special SFLOAT), ``unit`` (UCUM),
``pulse_rate`` (Decimal or None), ``flags`` (status bits, ``implausible``, ``trailing_bytes``)
and ``user`` (None when absent or 255).

Deliberate choices, as for 0x2A35: trailing bytes are tolerated and flagged; RFU bits are
ignored; a cuff pressure outside 0-350 mmHg (judged in mmHg whatever the unit; a cuff is pumped
some 30 mmHg above systolic, rarely beyond 300) is kept and flagged ``implausible``.
"""

from __future__ import annotations

from decimal import Context, Decimal
from typing import Any

from adapters.errors import DecodeError
from adapters.gatt_time import DATE_TIME_LENGTH, read_date_time
from adapters.ieee11073 import read_sfloat
from adapters.model import DecodeContext, Event, Unit

CHANNEL = "ble/2a36"
EVENT_TYPE = "bp.cuff_pressure"

_MANDATORY_LENGTH = 7  # flags + cuff pressure + two unused SFLOAT slots

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

# Measurement Status single-bit flags (status b0, b1, b2, b5), named as in ble_bpm.
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

_PRESSURE_MMHG = (Decimal(0), Decimal(350))
_MMHG_PER_KPA = Decimal("7.50062")  # PROTOCOLS.md §2.1
# A private context, so a caller's decimal context (precision, traps) cannot round or raise.
_EXACT = Context(prec=28, Emin=-999_999, Emax=999_999)


def _required_length(flags: int) -> int:
    return _MANDATORY_LENGTH + sum(size for bit, size, _ in _OPTIONAL_FIELDS if flags & bit)


def _flag_names(flags: int) -> str:
    names = [name for bit, _, name in _OPTIONAL_FIELDS if flags & bit]
    names.append("kPa" if flags & _UNIT_KPA else "mmHg")
    return ", ".join(names)


def _status_flags(status: int) -> list[str]:
    flags = [name for bit, name in _STATUS_BITS if status & bit]
    pulse_range = (status >> _PULSE_RANGE_SHIFT) & 0b11
    if pulse_range in _PULSE_RANGE_FLAGS:
        flags.append(_PULSE_RANGE_FLAGS[pulse_range])
    return flags


def decode(payload: bytes, ctx: DecodeContext) -> list[Event]:
    """Decode one 0x2A36 notification into a ``bp.cuff_pressure`` event."""
    if len(payload) < _MANDATORY_LENGTH:
        raise DecodeError(
            CHANNEL, f"payload is {len(payload)} bytes; a cuff pressure needs at least 7"
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
    pressure = read_sfloat(payload, 1, CHANNEL)
    offset = _MANDATORY_LENGTH

    occurred_at = None
    if flags & _HAS_TIME_STAMP:
        occurred_at = read_date_time(payload, offset, ctx.zone, CHANNEL)
        offset += DATE_TIME_LENGTH
    pulse_rate = None
    if flags & _HAS_PULSE_RATE:
        pulse_rate = read_sfloat(payload, offset, CHANNEL).value
        offset += 2
    user = None
    if flags & _HAS_USER_ID:
        user = None if payload[offset] == _UNKNOWN_USER else payload[offset]
        offset += 1
    event_flags: list[str] = []
    if flags & _HAS_STATUS:
        event_flags = _status_flags(int.from_bytes(payload[offset : offset + 2], "little"))
        offset += 2
    if pressure.value is not None:
        low, high = _PRESSURE_MMHG
        scale = _MMHG_PER_KPA if unit is Unit.KPA else Decimal(1)
        if not low <= _EXACT.multiply(pressure.value, scale) <= high:
            event_flags.append("implausible")
    if len(payload) > offset:
        event_flags.append("trailing_bytes")

    data: dict[str, Any] = {
        "pressure": pressure.value,
        "unit": str(unit),
        "absent_reason": None if pressure.absent is None else str(pressure.absent),
        "pulse_rate": pulse_rate,
        "flags": event_flags,
        "user": user,
    }
    return [Event(type=EVENT_TYPE, occurred_at=occurred_at, data=data)]
