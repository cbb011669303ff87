"""Weight Measurement (GATT 0x2A9D, indicated by a BLE scale) -> canonical observations.

Wire layout (PROTOCOLS.md §2.2, weight_measurement.xml), little-endian, walked with a running
offset:

    [0]      flags u8: b0 units (0 SI, 1 imperial), b1 time stamp, b2 user id,
             b3 BMI **and** height, b4-7 RFU
    [1..2]   weight u16: SI raw x 0.005 kg, imperial raw x 0.01 lb; 0xFFFF = unsuccessful
    +7       time stamp (Date Time 0x2A08)                   if b1
    +1       user id u8, 255 = unknown user                  if b2
    +2       BMI u16, raw x 0.1 kg/m2                        if b3
    +2       height u16: SI raw x 0.001 m, imperial raw x 0.1 in   if b3

Deliberate choices:

* The resolutions are fixed by the characteristic (trap 4). The Weight Scale Feature resolution
  says how precise the scale is; it is never a scale factor. Values are raw x step as Decimal, so
  14000 reads as exactly 70.000 kg.
* Weight 0xFFFF means "measurement unsuccessful" and only time stamp and user id may follow it
  (trap 5). It becomes the event ``scale.measurement_unsuccessful``; a payload that also
  announces BMI and height contradicts the specification and is rejected.
* b4 is RFU, so it is ignored even though vendors misuse it (Detecto "below zero"; the
  RonanB96 tests read it as "height present"): the specification wins.
* Trailing bytes are tolerated and flagged ``trailing_bytes``, as for 0x2A35.
* Plausible ranges, inclusive, judged in SI: weight 2-400 kg, height 0.4-2.5 m, BMI 8-90 kg/m2.
  Values outside are kept and flagged ``implausible``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Context, Decimal

from adapters.catalogue import METRICS, Metric
from adapters.errors import DecodeError
from adapters.gatt_flags import check_length
from adapters.gatt_time import DATE_TIME_LENGTH, read_date_time
from adapters.model import DecodeContext, Event, Observation, Unit

CHANNEL = "ble/2a9d"
UNSUCCESSFUL_EVENT = "scale.measurement_unsuccessful"

# Shared with the Body Composition Measurement (0x2A9C), which uses the same steps.
MASS_STEP: dict[bool, tuple[Decimal, Unit]] = {
    False: (Decimal("0.005"), Unit.KG),
    True: (Decimal("0.01"), Unit.LB),
}
HEIGHT_STEP: dict[bool, tuple[Decimal, Unit]] = {
    False: (Decimal("0.001"), Unit.M),
    True: (Decimal("0.1"), Unit.IN),
}
KG_PER_LB = Decimal("0.45359237")
M_PER_IN = Decimal("0.0254")
WEIGHT_KG = (Decimal(2), Decimal(400))
HEIGHT_M = (Decimal("0.4"), Decimal("2.5"))
UNSUCCESSFUL = 0xFFFF
UNKNOWN_USER = 255

# A private context, so a caller's decimal context (precision, traps) cannot round or raise.
_EXACT = Context(prec=28, Emin=-999_999, Emax=999_999)
_BMI_STEP = Decimal("0.1")
_BMI = (Decimal(8), Decimal(90))

_MANDATORY_LENGTH = 3  # flags + weight
_IMPERIAL = 0x01
_HAS_TIME_STAMP = 0x02
_HAS_USER_ID = 0x04
_HAS_BMI_HEIGHT = 0x08

# Optional fields in wire order: flag bit, size in bytes, name used in reject reasons.
_OPTIONAL_FIELDS = (
    (_HAS_TIME_STAMP, DATE_TIME_LENGTH, "time stamp"),
    (_HAS_USER_ID, 1, "user id"),
    (_HAS_BMI_HEIGHT, 4, "BMI and height"),
)




def scaled(raw: int, step: Decimal) -> Decimal:
    """``raw`` x ``step`` exactly: 14000 x 0.005 is 70.000, never rounded."""
    return _EXACT.multiply(raw, step)


def si_value(value: Decimal, unit: Unit) -> Decimal:
    """The value in kg or m, for plausibility checks of imperial readings."""
    if unit is Unit.LB:
        return _EXACT.multiply(value, KG_PER_LB)
    if unit is Unit.IN:
        return _EXACT.multiply(value, M_PER_IN)
    return value


def observation(
    metric: Metric,
    value: Decimal,
    unit: Unit,
    bounds: tuple[Decimal, Decimal],
    *,
    measured_at: datetime | None,
    flags: tuple[str, ...],
    device_user: int | None,
) -> Observation:
    """An observation of ``metric``, flagged ``implausible`` outside ``bounds`` (in SI)."""
    low, high = bounds
    if not low <= si_value(value, unit) <= high:
        flags = (*flags, "implausible")
    return Observation(
        code=metric.loinc,
        mdc=metric.mdc,
        value=value,
        unit=unit,
        measured_at=measured_at,
        flags=flags,
        device_user=device_user,
    )


def decode(payload: bytes, ctx: DecodeContext) -> list[Observation | Event]:
    """Decode one 0x2A9D indication into weight (and BMI and height), or an unsuccessful event."""
    if len(payload) < _MANDATORY_LENGTH:
        raise DecodeError(
            CHANNEL, f"payload is {len(payload)} bytes; a measurement needs at least 3"
        )
    flags = payload[0]
    raw_weight = int.from_bytes(payload[1:3], "little")
    if raw_weight == UNSUCCESSFUL and flags & _HAS_BMI_HEIGHT:
        raise DecodeError(
            CHANNEL,
            f"weight 0xFFFF (measurement unsuccessful) but flags 0x{flags:02x} announce BMI "
            "and height; only time stamp and user id may follow",
        )
    check_length(payload, CHANNEL, flags=flags, flag_bytes=1, mandatory=_MANDATORY_LENGTH,
                 fields=_OPTIONAL_FIELDS, unit="imperial" if flags & _IMPERIAL else "SI")
    imperial = bool(flags & _IMPERIAL)
    offset = _MANDATORY_LENGTH
    measured_at = None
    if flags & _HAS_TIME_STAMP:
        measured_at = read_date_time(payload, offset, ctx.zone, CHANNEL)
        offset += DATE_TIME_LENGTH
    device_user = None
    if flags & _HAS_USER_ID:
        device_user = None if payload[offset] == UNKNOWN_USER else payload[offset]
        offset += 1
    bmi_height = None
    if flags & _HAS_BMI_HEIGHT:
        bmi_height = (
            int.from_bytes(payload[offset : offset + 2], "little"),
            int.from_bytes(payload[offset + 2 : offset + 4], "little"),
        )
        offset += 4
    message_flags: tuple[str, ...] = ("trailing_bytes",) if len(payload) > offset else ()

    if raw_weight == UNSUCCESSFUL:
        data = {"measurement": "weight", "user": device_user, "flags": list(message_flags)}
        return [Event(type=UNSUCCESSFUL_EVENT, occurred_at=measured_at, data=data)]
    step, unit = MASS_STEP[imperial]

    def measured(metric: Metric, value: Decimal, unit: Unit,
                 bounds: tuple[Decimal, Decimal]) -> Observation:
        return observation(metric, value, unit, bounds, measured_at=measured_at,
                           flags=message_flags, device_user=device_user)

    records: list[Observation | Event] = [
        measured(METRICS["body_weight"], scaled(raw_weight, step), unit, WEIGHT_KG)
    ]
    if bmi_height is not None:
        raw_bmi, raw_height = bmi_height
        height_step, height_unit = HEIGHT_STEP[imperial]
        records.append(measured(METRICS["bmi"], scaled(raw_bmi, _BMI_STEP), Unit.KG_PER_M2, _BMI))
        records.append(
            measured(METRICS["body_height"], scaled(raw_height, height_step), height_unit,
                     HEIGHT_M)
        )
    return records
