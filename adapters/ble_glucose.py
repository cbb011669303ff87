"""Glucose Measurement (GATT 0x2A18, a meter record fetched through RACP) -> one observation.

Wire layout (PROTOCOLS.md §2.4, glucose_measurement.xml), little-endian, walked with a running
offset:

    [0]      flags u8: b0 time offset, b1 concentration + type/sample location,
             b2 concentration unit (0 kg/L, 1 mol/L), b3 sensor status annunciation,
             b4 context information follows (0x2A34 with the same sequence number), b5-7 RFU
    [1..2]   sequence number u16 -> Observation.sequence, the key for de-duplication
    [3..9]   base time (Date Time 0x2A08)
    +2       time offset s16 minutes (signed, trap 6)                 if b0
    +2       concentration SFLOAT in kg/L or mol/L                    if b1
    +1       type (low nibble) and sample location (high nibble)      if b1
    +2       sensor status annunciation u16                           if b3

Conversion (trap 6): the SFLOAT already carries its exponent, so 0xB054 is 84e-5 kg/L; mg/dL is
kg/L x 100 000 and mmol/L is mol/L x 1 000, done by moving the decimal point so no digit is
lost. The type selects the MDC code (catalogue rows ``glucose_*``); LOINC is 2339-0 for mg/dL
and 15074-8 for mmol/L (the capillary "by glucometer" codes 41653-7 / 14743-9 are [unverified]
in PROTOCOLS.md §5 and not used).

Deliberate choices:

* measured_at is base time + offset on the device's wall clock, then placed in the hub's zone
  (the offset corrects the wall clock, e.g. after a DST change). An unknown base date, or the
  offset words 0x7FFF (overrun) and 0x8000 (underrun) listed, commented out, in the XML, give
  measured_at None and the flag ``time_offset_overrun`` / ``time_offset_underrun``.
* Flags: ``sample:<type>``, ``site:<location>`` (nothing for 15 "not available" or reserved
  values), the annunciation bits, ``context_follows``, ``implausible``, ``trailing_bytes``.
  Control-solution results keep their own MDC code (160208) and ``sample:control_solution``.
* A record without concentration (b1 clear) cannot be an observation: it becomes the event
  ``glucose.no_result`` with ``sequence`` and ``flags``.
* Plausible ranges: 10-1000 mg/dL, 0.5-55 mmol/L (meters read about 10-600 mg/dL).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Context, Decimal

from adapters.catalogue import GLUCOSE_MOLES_LOINC, METRICS
from adapters.errors import DecodeError
from adapters.gatt_flags import check_length
from adapters.gatt_time import DATE_TIME_LENGTH, read_date_time
from adapters.ieee11073 import read_sfloat
from adapters.model import DecodeContext, Event, Observation, Unit

CHANNEL = "ble/2a18"
NO_RESULT_EVENT = "glucose.no_result"

_MANDATORY_LENGTH = 3 + DATE_TIME_LENGTH  # flags + sequence number + base time
_HAS_TIME_OFFSET = 0x01
_HAS_CONCENTRATION = 0x02
_UNIT_MOL_PER_L = 0x04
_HAS_STATUS = 0x08
_CONTEXT_FOLLOWS = 0x10

_OPTIONAL_FIELDS = (
    (_HAS_TIME_OFFSET, 2, "time offset"),
    (_HAS_CONCENTRATION, 3, "concentration and type"),
    (_HAS_STATUS, 2, "sensor status annunciation"),
)
_OFFSET_SPECIALS = {0x7FFF: "time_offset_overrun", -0x8000: "time_offset_underrun"}

# Type (low nibble) -> (catalogue key, flag name); undetermined whole blood has no verified MDC
# code and uses the generic row.
_TYPES = {
    1: ("glucose_capillary_whole_blood", "capillary_whole_blood"),
    2: ("glucose_capillary_plasma", "capillary_plasma"),
    3: ("glucose_venous_whole_blood", "venous_whole_blood"),
    4: ("glucose_venous_plasma", "venous_plasma"),
    5: ("glucose_arterial_whole_blood", "arterial_whole_blood"),
    6: ("glucose_arterial_plasma", "arterial_plasma"),
    7: ("glucose", "undetermined_whole_blood"),
    8: ("glucose_undetermined_plasma", "undetermined_plasma"),
    9: ("glucose_interstitial_fluid", "interstitial_fluid"),
    10: ("glucose_control_solution", "control_solution"),
}
_LOCATIONS = {1: "finger", 2: "alternate_site_test", 3: "earlobe", 4: "control_solution"}
_ANNUNCIATION = (
    (1 << 0, "device_battery_low"),
    (1 << 1, "sensor_malfunction"),
    (1 << 2, "sample_size_insufficient"),
    (1 << 3, "strip_insertion_error"),
    (1 << 4, "strip_type_incorrect"),
    (1 << 5, "result_above_range"),
    (1 << 6, "result_below_range"),
    (1 << 7, "sensor_temperature_too_high"),
    (1 << 8, "sensor_temperature_too_low"),
    (1 << 9, "sensor_read_interrupted"),
    (1 << 10, "general_device_fault"),
    (1 << 11, "time_fault"),
)
# (unit, decimal places to move, LOINC, plausible range) per unit flag.
_UNITS = {
    False: (Unit.MG_PER_DL, 5, None, (Decimal(10), Decimal(1000))),
    True: (Unit.MMOL_PER_L, 3, GLUCOSE_MOLES_LOINC, (Decimal("0.5"), Decimal(55))),
}
_EXACT = Context(prec=28, Emin=-999_999, Emax=999_999)


def shift(value: Decimal, places: int) -> Decimal:
    """``value`` x 10**places exactly; a positive exponent is written out (3E+6 -> 3000000)."""
    moved = value.scaleb(places, _EXACT)
    exponent = moved.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return Decimal(int(moved))
    return moved



def _measured_at(
    payload: bytes, offset_minutes: int | None, zone: tzinfo
) -> tuple[datetime | None, tuple[str, ...]]:
    # Read the base time as a bare wall clock (UTC as a neutral zone), add the offset there,
    # and only then place it in the hub's zone.
    base = read_date_time(payload, 3, UTC, CHANNEL)
    if offset_minutes in _OFFSET_SPECIALS:
        return None, (_OFFSET_SPECIALS[offset_minutes],)
    if base is None:
        return None, ()
    try:
        wall = base.replace(tzinfo=None) + timedelta(minutes=offset_minutes or 0)
        return wall.replace(tzinfo=zone, fold=0).astimezone(UTC), ()
    except OverflowError:
        raise DecodeError(
            CHANNEL,
            f"base time {base:%Y-%m-%dT%H:%M:%S} plus {offset_minutes} minutes has no UTC form",
        ) from None


def decode(payload: bytes, ctx: DecodeContext) -> list[Observation | Event]:
    """Decode one 0x2A18 record into a glucose observation (or a no-result event)."""
    if len(payload) < _MANDATORY_LENGTH:
        raise DecodeError(
            CHANNEL, f"payload is {len(payload)} bytes; a measurement needs at least 10"
        )
    flags = payload[0]
    check_length(payload, CHANNEL, flags=flags, flag_bytes=1, mandatory=_MANDATORY_LENGTH,
                 fields=_OPTIONAL_FIELDS)
    sequence = int.from_bytes(payload[1:3], "little")
    offset = _MANDATORY_LENGTH
    offset_minutes = None
    if flags & _HAS_TIME_OFFSET:
        offset_minutes = int.from_bytes(payload[offset : offset + 2], "little", signed=True)
        offset += 2
    measured_at, time_flags = _measured_at(payload, offset_minutes, ctx.zone)
    reading = None
    sample_flags: tuple[str, ...] = ()
    key = "glucose"
    if flags & _HAS_CONCENTRATION:
        reading = read_sfloat(payload, offset, CHANNEL)
        sample_type, location = payload[offset + 2] & 0x0F, payload[offset + 2] >> 4
        if sample_type in _TYPES:
            key, name = _TYPES[sample_type]
            sample_flags = (f"sample:{name}",)
        if location in _LOCATIONS:
            sample_flags = (*sample_flags, f"site:{_LOCATIONS[location]}")
        offset += 3
    if flags & _HAS_STATUS:
        status = int.from_bytes(payload[offset : offset + 2], "little")
        sample_flags = (*sample_flags, *(name for bit, name in _ANNUNCIATION if status & bit))
        offset += 2
    if flags & _CONTEXT_FOLLOWS:
        sample_flags = (*sample_flags, "context_follows")
    sample_flags = (*sample_flags, *time_flags)
    trailing: tuple[str, ...] = ("trailing_bytes",) if len(payload) > offset else ()

    if reading is None:
        data = {"sequence": sequence, "flags": [*sample_flags, *trailing]}
        return [Event(type=NO_RESULT_EVENT, occurred_at=measured_at, data=data)]
    unit, places, moles_loinc, (low, high) = _UNITS[bool(flags & _UNIT_MOL_PER_L)]
    value = None if reading.value is None else shift(reading.value, places)
    if value is not None and not low <= value <= high:
        sample_flags = (*sample_flags, "implausible")
    metric = METRICS[key]
    return [
        Observation(
            code=moles_loinc or metric.loinc,
            mdc=metric.mdc,
            value=value,
            unit=unit,
            measured_at=measured_at,
            flags=(*sample_flags, *trailing),
            absent_reason=reading.absent,
            sequence=sequence,
        )
    ]
