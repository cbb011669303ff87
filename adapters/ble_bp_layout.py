"""The wire layout Blood Pressure Measurement (0x2A35) and Intermediate Cuff Pressure (0x2A36)
share (PROTOCOLS.md §2.1): flags, three SFLOAT slots, then optional fields in flag order.

    [0]      flags u8: b0 unit (0 mmHg, 1 kPa), b1 time stamp, b2 pulse rate, b3 user id,
             b4 measurement status, b5-7 RFU
    [1..6]   3 x SFLOAT (for 0x2A36: the cuff pressure, then two unused slots)
    +7       time stamp (Date Time 0x2A08)                   if b1
    +2       pulse rate SFLOAT, always beats/min             if b2
    +1       user id u8, 255 = unknown user                  if b3
    +2       measurement status u16                          if b4
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal

from adapters.errors import DecodeError
from adapters.gatt_flags import check_length
from adapters.gatt_time import DATE_TIME_LENGTH, read_date_time
from adapters.ieee11073 import MedFloat, read_sfloat
from adapters.model import DecodeContext, Unit

MANDATORY_LENGTH = 7  # flags + 3 SFLOAT
_SLOT_OFFSETS = (1, 3, 5)

UNIT_KPA = 0x01
HAS_TIME_STAMP = 0x02
HAS_PULSE_RATE = 0x04
HAS_USER_ID = 0x08
HAS_STATUS = 0x10

# Optional fields in wire order: flag bit, size in bytes, name used in reject reasons.
OPTIONAL_FIELDS = (
    (HAS_TIME_STAMP, DATE_TIME_LENGTH, "time stamp"),
    (HAS_PULSE_RATE, 2, "pulse rate"),
    (HAS_USER_ID, 1, "user id"),
    (HAS_STATUS, 2, "measurement status"),
)

UNKNOWN_USER = 255

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

MMHG_PER_KPA = Decimal("7.50062")  # PROTOCOLS.md §2.1
# A private context, so a caller's decimal context (precision, traps) cannot round or raise.
EXACT = Context(prec=28, Emin=-999_999, Emax=999_999)




def status_flags(status: int) -> tuple[str, ...]:
    """Measurement Status bits as flag names."""
    flags = [name for bit, name in _STATUS_BITS if status & bit]
    pulse_range = (status >> _PULSE_RANGE_SHIFT) & 0b11
    if pulse_range in _PULSE_RANGE_FLAGS:
        flags.append(_PULSE_RANGE_FLAGS[pulse_range])
    return tuple(flags)


# Not frozen: one is made for every message, and a frozen dataclass sets each field through
# object.__setattr__ (see adapters.model.Observation). Treat it as immutable.
@dataclass(slots=True)
class Frame:
    """One 0x2A35/0x2A36 value walked field by field (which slots mean what is the caller's)."""

    unit: Unit
    slots: tuple[MedFloat, ...]
    at: datetime | None
    pulse: MedFloat | None
    user: int | None
    status: tuple[str, ...]
    trailing: bool


def read_frame(payload: bytes, ctx: DecodeContext, channel: str, what: str,
               slots: int) -> Frame:
    """Check the length against the flags, then read the first ``slots`` SFLOAT slots and the
    optional fields with a running offset; DecodeError names what was wrong."""
    if len(payload) < MANDATORY_LENGTH:
        raise DecodeError(
            channel, f"payload is {len(payload)} bytes; {what} needs at least 7")
    flags = payload[0]
    check_length(payload, channel, flags=flags, flag_bytes=1, mandatory=MANDATORY_LENGTH,
                 fields=OPTIONAL_FIELDS, unit="kPa" if flags & UNIT_KPA else "mmHg")
    values = tuple([read_sfloat(payload, offset, channel) for offset in _SLOT_OFFSETS[:slots]])
    offset = MANDATORY_LENGTH
    at = None
    if flags & HAS_TIME_STAMP:
        at = read_date_time(payload, offset, ctx.zone, channel)
        offset += DATE_TIME_LENGTH
    pulse = None
    if flags & HAS_PULSE_RATE:
        pulse = read_sfloat(payload, offset, channel)
        offset += 2
    user = None
    if flags & HAS_USER_ID:
        user = None if payload[offset] == UNKNOWN_USER else payload[offset]
        offset += 1
    status: tuple[str, ...] = ()
    if flags & HAS_STATUS:
        status = status_flags(int.from_bytes(payload[offset : offset + 2], "little"))
        offset += 2
    return Frame(unit=Unit.KPA if flags & UNIT_KPA else Unit.MMHG, slots=values, at=at,
                 pulse=pulse, user=user, status=status, trailing=len(payload) > offset)
