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

from decimal import Decimal
from typing import Any

from adapters.ble_bp_layout import EXACT, MMHG_PER_KPA, read_frame
from adapters.model import DecodeContext, Event, Unit

CHANNEL = "ble/2a36"
EVENT_TYPE = "bp.cuff_pressure"

_PRESSURE_MMHG = (Decimal(0), Decimal(350))


def decode(payload: bytes, ctx: DecodeContext) -> list[Event]:
    """Decode one 0x2A36 notification into a ``bp.cuff_pressure`` event."""
    # Slots 2 and 3 are unused in 0x2A36 (they may hold 0 or NaN): only the first is read.
    frame = read_frame(payload, ctx, CHANNEL, "a cuff pressure", slots=1)
    unit, (pressure,), occurred_at = frame.unit, frame.slots, frame.at
    pulse_rate = None if frame.pulse is None else frame.pulse.value
    user = frame.user
    event_flags = list(frame.status)
    if pressure.value is not None:
        low, high = _PRESSURE_MMHG
        scale = MMHG_PER_KPA if unit is Unit.KPA else Decimal(1)
        if not low <= EXACT.multiply(pressure.value, scale) <= high:
            event_flags.append("implausible")
    if frame.trailing:
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
