"""Body Composition Measurement (GATT 0x2A9C, indicated by a BIA scale) -> observations and events.

Wire layout (body_composition_measurement.xml, oesmith/gatt-xml@4fd2ede1; BCS 1.0 §3.2),
little-endian, walked with a running offset:

    [0..1]   flags u16: b0 units (0 SI, 1 imperial), b1 time stamp, b2 user id, b3 basal
             metabolism, b4 muscle %, b5 muscle mass, b6 fat free mass, b7 soft lean mass,
             b8 body water mass, b9 impedance, b10 weight, b11 height,
             b12 multiple packet measurement, b13-15 RFU
    [2..3]   body fat percentage u16, raw x 0.1 %; 0xFFFF = measurement unsuccessful
    +7       time stamp (Date Time 0x2A08)                       if b1
    +1       user id u8, 255 = unknown user                      if b2
    +2 each  in flag order, u16, if their bit is set:
             basal metabolism (raw kJ), muscle percentage (raw x 0.1 %),
             muscle mass, fat free mass, soft lean mass, body water mass and weight
             (SI raw x 0.005 kg, imperial raw x 0.01 lb: the 0x2A9D steps),
             impedance (raw x 0.1 Ohm), height (SI raw x 0.001 m, imperial raw x 0.1 in)

Output:

* body fat (LOINC 41982-0, MDC 188748), weight and height become observations;
* the remaining components have no verified LOINC code, and a catalogue row needs one, so they
  travel in one ``scale.body_composition`` event, each as ``{"value": Decimal, "unit": UCUM}``
  (``kJ``, ``%``, ``kg``/``[lb_av]``, ``Ohm``), with ``user`` and ``flags``;
* body fat 0xFFFF (eisaev/blevalueparser ``isMeasurementUnsuccessful``, from BCS 1.0) gives the
  event ``scale.measurement_unsuccessful`` instead of a body fat observation. Unlike the weight
  scale, no source read limits what may follow it, so the other flagged fields are still read.

Deliberate choices: a scale that splits one measurement over several indications sets b12 in
each; every packet is decoded on its own and carries the flag ``multiple_packet`` so the parts
can be joined downstream. Trailing bytes are tolerated and flagged ``trailing_bytes``. Plausible
ranges (flag ``implausible`` outside): body fat 1-75 %, weight and height as for 0x2A9D.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from adapters.ble_weight import (
    HEIGHT_M,
    HEIGHT_STEP,
    MASS_STEP,
    UNKNOWN_USER,
    UNSUCCESSFUL,
    UNSUCCESSFUL_EVENT,
    WEIGHT_KG,
    observation,
    scaled,
)
from adapters.catalogue import METRICS
from adapters.errors import DecodeError
from adapters.gatt_flags import check_length
from adapters.gatt_time import DATE_TIME_LENGTH, read_date_time
from adapters.model import DecodeContext, Event, Observation, Unit

CHANNEL = "ble/2a9c"
COMPOSITION_EVENT = "scale.body_composition"

_MANDATORY_LENGTH = 4  # flags u16 + body fat percentage
_IMPERIAL = 0x0001
_HAS_TIME_STAMP = 0x0002
_HAS_USER_ID = 0x0004
_MULTIPLE_PACKET = 0x1000

_PERCENT_STEP = Decimal("0.1")
_BODY_FAT = (Decimal(1), Decimal(75))

# The u16 fields after the user id, in wire order: flag bit, key, and what scales them.
_U16_FIELDS = (
    (0x0008, "basal_metabolism", "energy"),
    (0x0010, "muscle_percentage", "percent"),
    (0x0020, "muscle_mass", "mass"),
    (0x0040, "fat_free_mass", "mass"),
    (0x0080, "soft_lean_mass", "mass"),
    (0x0100, "body_water_mass", "mass"),
    (0x0200, "impedance", "impedance"),
    (0x0400, "weight", "mass"),
    (0x0800, "height", "length"),
)
_FIXED_STEPS: dict[str, tuple[Decimal, str]] = {
    "energy": (Decimal(1), "kJ"),
    "percent": (_PERCENT_STEP, str(Unit.PERCENT)),
    "impedance": (Decimal("0.1"), "Ohm"),
}

# Every optional field for the length check: flag bit, size, name used in reject reasons.
_OPTIONAL_FIELDS = (
    (_HAS_TIME_STAMP, DATE_TIME_LENGTH, "time stamp"),
    (_HAS_USER_ID, 1, "user id"),
    *((bit, 2, key.replace("_", " ")) for bit, key, _ in _U16_FIELDS),
)




def _step(kind: str, imperial: bool) -> tuple[Decimal, str]:
    if kind == "mass":
        step, unit = MASS_STEP[imperial]
        return step, str(unit)
    if kind == "length":
        step, unit = HEIGHT_STEP[imperial]
        return step, str(unit)
    return _FIXED_STEPS[kind]


def decode(payload: bytes, ctx: DecodeContext) -> list[Observation | Event]:
    """Decode one 0x2A9C indication into body fat, weight and height plus a composition event."""
    if len(payload) < _MANDATORY_LENGTH:
        raise DecodeError(
            CHANNEL, f"payload is {len(payload)} bytes; a measurement needs at least 4"
        )
    flags = int.from_bytes(payload[0:2], "little")
    check_length(payload, CHANNEL, flags=flags, flag_bytes=2, mandatory=_MANDATORY_LENGTH,
                 fields=_OPTIONAL_FIELDS, unit="imperial" if flags & _IMPERIAL else "SI")
    imperial = bool(flags & _IMPERIAL)
    raw_fat = int.from_bytes(payload[2:4], "little")
    offset = _MANDATORY_LENGTH
    measured_at: datetime | None = None
    if flags & _HAS_TIME_STAMP:
        measured_at = read_date_time(payload, offset, ctx.zone, CHANNEL)
        offset += DATE_TIME_LENGTH
    device_user = None
    if flags & _HAS_USER_ID:
        device_user = None if payload[offset] == UNKNOWN_USER else payload[offset]
        offset += 1
    values: dict[str, tuple[Decimal, str]] = {}
    for bit, key, kind in _U16_FIELDS:
        if flags & bit:
            step, unit = _step(kind, imperial)
            raw = int.from_bytes(payload[offset : offset + 2], "little")
            values[key] = (scaled(raw, step), unit)
            offset += 2

    message_flags: tuple[str, ...] = ()
    if flags & _MULTIPLE_PACKET:
        message_flags = ("multiple_packet",)
    if len(payload) > offset:
        message_flags = (*message_flags, "trailing_bytes")
    common: dict[str, Any] = {"user": device_user, "flags": list(message_flags)}

    records: list[Observation | Event] = []
    if raw_fat == UNSUCCESSFUL:
        data = {"measurement": "body_fat_percentage", **common}
        records.append(Event(type=UNSUCCESSFUL_EVENT, occurred_at=measured_at, data=data))
    else:
        records.append(
            observation(METRICS["body_fat"], scaled(raw_fat, _PERCENT_STEP), Unit.PERCENT,
                        _BODY_FAT, measured_at=measured_at, flags=message_flags,
                        device_user=device_user)
        )
    for key, metric_key, bounds in (("weight", "body_weight", WEIGHT_KG),
                                    ("height", "body_height", HEIGHT_M)):
        if key in values:
            value, unit = values.pop(key)
            records.append(
                observation(METRICS[metric_key], value, Unit(unit), bounds,
                            measured_at=measured_at, flags=message_flags,
                            device_user=device_user)
            )
    if values:
        components = {key: {"value": value, "unit": unit} for key, (value, unit) in values.items()}
        records.append(
            Event(type=COMPOSITION_EVENT, occurred_at=measured_at, data={**components, **common})
        )
    return records
