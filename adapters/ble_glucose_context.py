"""Glucose Measurement Context (GATT 0x2A34) -> one ``glucose.context`` event.

Wire layout (glucose_measurement_context.xml, oesmith/gatt-xml@4fd2ede1), little-endian, walked
with a running offset:

    [0]      flags u8: b0 carbohydrate id + carbohydrate, b1 meal, b2 tester-health,
             b3 exercise duration + intensity, b4 medication id + medication,
             b5 medication unit (0 kilograms, 1 litres), b6 HbA1c, b7 extended flags
    [1..2]   sequence number u16: the 0x2A18 record this context belongs to
    +1       extended flags u8 (all RFU)                                  if b7
    +1 +2    carbohydrate id u8, carbohydrate SFLOAT kg                   if b0
    +1       meal u8                                                      if b1
    +1       tester (low nibble) and health (high nibble)                 if b2
    +2 +1    exercise duration u16 s (65535 = overrun), intensity u8 %    if b3
    +1 +2    medication id u8, medication SFLOAT kg or L (b5)             if b4
    +2       HbA1c SFLOAT %                                               if b6

The event carries ``sequence`` (to join it to the measurement), and per present field:
``carbohydrate`` {kind, amount, unit "g"}, ``meal`` (preprandial, postprandial, fasting, casual,
bedtime), ``tester``, ``health``, ``exercise`` {duration_s, intensity_percent},
``medication`` {kind, amount, unit "mg" or "mL"}, ``hba1c`` {value, unit "%"}, ``extended_flags``
and ``flags``. An SFLOAT special value gives amount/value None plus ``absent_reason``. Reserved
enumeration values read as ``rfu:<n>``.

Deliberate choices:

* Units: as for the glucose concentration (trap 6) the SFLOAT carries its own exponent and is in
  the unit the XML names (kg, kg or L); it is converted exactly to g, mg or mL. Nordic's decoder
  reads the same SFLOAT as grams and mg/mL outright; the JDRF vectors (0xD072 = 114e-3 kg of
  carbohydrate, 0xA05D = 93e-6 kg of insulin) only make sense the SIG way.
* Exercise duration 65535 means overrun: ``duration_s`` None and the flag ``exercise_overrun``.
* HbA1c outside 3-20 % is kept and flagged ``implausible``; trailing bytes are tolerated and
  flagged ``trailing_bytes``. The context has no time of its own: occurred_at is None.
"""

from __future__ import annotations

from typing import Any

from adapters.ble_glucose import shift
from adapters.errors import DecodeError
from adapters.ieee11073 import MedFloat, read_sfloat
from adapters.model import DecodeContext, Event

CHANNEL = "ble/2a34"
EVENT_TYPE = "glucose.context"

_MANDATORY_LENGTH = 3  # flags + sequence number
_CARBOHYDRATE, _MEAL, _TESTER_HEALTH, _EXERCISE = 0x01, 0x02, 0x04, 0x08
_MEDICATION, _MEDICATION_LITRES, _HBA1C, _EXTENDED = 0x10, 0x20, 0x40, 0x80

# Optional fields in wire order (extended flags come first): flag bit, size, reject name.
_OPTIONAL_FIELDS = (
    (_EXTENDED, 1, "extended flags"),
    (_CARBOHYDRATE, 3, "carbohydrate"),
    (_MEAL, 1, "meal"),
    (_TESTER_HEALTH, 1, "tester-health"),
    (_EXERCISE, 3, "exercise"),
    (_MEDICATION, 3, "medication"),
    (_HBA1C, 2, "HbA1c"),
)

_CARBOHYDRATES = {1: "breakfast", 2: "lunch", 3: "dinner", 4: "snack", 5: "drink",
                  6: "supper", 7: "brunch"}
_MEALS = {1: "preprandial", 2: "postprandial", 3: "fasting", 4: "casual", 5: "bedtime"}
_TESTERS = {1: "self", 2: "health_care_professional", 3: "lab_test", 15: "not_available"}
_HEALTH = {1: "minor_health_issues", 2: "major_health_issues", 3: "during_menses",
           4: "under_stress", 5: "no_health_issues", 15: "not_available"}
_MEDICATIONS = {1: "rapid_acting_insulin", 2: "short_acting_insulin",
                3: "intermediate_acting_insulin", 4: "long_acting_insulin",
                5: "pre_mixed_insulin"}
_EXERCISE_OVERRUN = 0xFFFF
_HBA1C_PERCENT = (3, 20)


def _name(table: dict[int, str], value: int) -> str:
    return table.get(value, f"rfu:{value}")


def _amount(reading: MedFloat, places: int, unit: str) -> dict[str, Any]:
    value = None if reading.value is None else shift(reading.value, places)
    absent = None if reading.absent is None else str(reading.absent)
    return {"amount": value, "unit": unit, "absent_reason": absent}


def decode(payload: bytes, ctx: DecodeContext) -> list[Event]:
    """Decode one 0x2A34 notification into a ``glucose.context`` event."""
    if len(payload) < _MANDATORY_LENGTH:
        raise DecodeError(
            CHANNEL, f"payload is {len(payload)} bytes; a context needs at least 3"
        )
    flags = payload[0]
    needed = _MANDATORY_LENGTH + sum(size for bit, size, _ in _OPTIONAL_FIELDS if flags & bit)
    if len(payload) < needed:
        names = ", ".join(name for bit, _, name in _OPTIONAL_FIELDS if flags & bit)
        raise DecodeError(
            CHANNEL,
            f"payload is {len(payload)} bytes but flags 0x{flags:02x} ({names}) need {needed}",
        )
    data: dict[str, Any] = {"sequence": int.from_bytes(payload[1:3], "little")}
    event_flags: list[str] = []
    offset = _MANDATORY_LENGTH
    if flags & _EXTENDED:
        data["extended_flags"] = payload[offset]
        offset += 1
    if flags & _CARBOHYDRATE:
        kind = _name(_CARBOHYDRATES, payload[offset])
        grams = _amount(read_sfloat(payload, offset + 1, CHANNEL), 3, "g")
        data["carbohydrate"] = {"kind": kind, **grams}
        offset += 3
    if flags & _MEAL:
        data["meal"] = _name(_MEALS, payload[offset])
        offset += 1
    if flags & _TESTER_HEALTH:
        data["tester"] = _name(_TESTERS, payload[offset] & 0x0F)
        data["health"] = _name(_HEALTH, payload[offset] >> 4)
        offset += 1
    if flags & _EXERCISE:
        duration: int | None = int.from_bytes(payload[offset : offset + 2], "little")
        if duration == _EXERCISE_OVERRUN:
            duration = None
            event_flags.append("exercise_overrun")
        data["exercise"] = {"duration_s": duration, "intensity_percent": payload[offset + 2]}
        offset += 3
    if flags & _MEDICATION:
        places, unit = (3, "mL") if flags & _MEDICATION_LITRES else (6, "mg")
        kind = _name(_MEDICATIONS, payload[offset])
        amount = _amount(read_sfloat(payload, offset + 1, CHANNEL), places, unit)
        data["medication"] = {"kind": kind, **amount}
        offset += 3
    if flags & _HBA1C:
        hba1c = read_sfloat(payload, offset, CHANNEL)
        absent = None if hba1c.absent is None else str(hba1c.absent)
        data["hba1c"] = {"value": hba1c.value, "unit": "%", "absent_reason": absent}
        low, high = _HBA1C_PERCENT
        if hba1c.value is not None and not low <= hba1c.value <= high:
            event_flags.append("implausible")
        offset += 2
    if len(payload) > offset:
        event_flags.append("trailing_bytes")
    data["flags"] = event_flags
    return [Event(type=EVENT_TYPE, occurred_at=None, data=data)]
