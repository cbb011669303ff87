"""Temperature Measurement (GATT 0x2A1C, indicated by a thermometer) -> one observation.

Wire layout (PROTOCOLS.md §2.5, temperature_measurement.xml, temperature_type.xml),
little-endian, walked with a running offset:

    [0]      flags u8: b0 unit (0 Celsius, 1 Fahrenheit), b1 time stamp, b2 temperature type,
             b3-7 RFU
    [1..4]   temperature FLOAT (IEEE 11073 32-bit) in the flagged unit
    +7       time stamp (Date Time 0x2A08)                   if b1
    +1       temperature type u8                             if b2: 1 armpit, 2 body (general),
             3 ear (usually ear lobe), 4 finger, 5 gastro-intestinal tract, 6 mouth, 7 rectum,
             8 toe, 9 tympanum (ear drum); 0 and 10-255 reserved

Output: body temperature (LOINC 8310-5, MDC 150364) in ``Cel`` or ``[degF]``; the type becomes
the flag ``site:<name>`` (a reserved type adds none, as RFU values are ignored).

Deliberate choices: trailing bytes are tolerated and flagged ``trailing_bytes``; a temperature
outside 25-45 °C (judged in Celsius whatever the unit; deep hypothermia to high fever) is kept and
flagged ``implausible``. Intermediate Temperature (0x2A1E) shares the layout but is not a
channel: it is never a final value (PROTOCOLS.md §7 rule 5).
"""

from __future__ import annotations

from decimal import Context, Decimal

from adapters.catalogue import METRICS
from adapters.errors import DecodeError
from adapters.gatt_time import DATE_TIME_LENGTH, read_date_time
from adapters.ieee11073 import read_float
from adapters.model import DecodeContext, Observation, Unit

CHANNEL = "ble/2a1c"

_MANDATORY_LENGTH = 5  # flags + FLOAT
_FAHRENHEIT = 0x01
_HAS_TIME_STAMP = 0x02
_HAS_TYPE = 0x04

_OPTIONAL_FIELDS = (
    (_HAS_TIME_STAMP, DATE_TIME_LENGTH, "time stamp"),
    (_HAS_TYPE, 1, "temperature type"),
)
_SITES = {1: "armpit", 2: "body", 3: "ear", 4: "finger", 5: "gastrointestinal_tract",
          6: "mouth", 7: "rectum", 8: "toe", 9: "tympanum"}
_CELSIUS = (Decimal(25), Decimal(45))
# A private context, so a caller's decimal context (precision, traps) cannot round or raise.
_CONTEXT = Context(prec=28, Emin=-999_999, Emax=999_999)


def _celsius(value: Decimal, unit: Unit) -> Decimal:
    if unit is not Unit.DEGF:
        return value
    return _CONTEXT.divide(_CONTEXT.multiply(_CONTEXT.subtract(value, 32), 5), 9)


def decode(payload: bytes, ctx: DecodeContext) -> list[Observation]:
    """Decode one 0x2A1C indication into a body temperature observation."""
    if len(payload) < _MANDATORY_LENGTH:
        raise DecodeError(
            CHANNEL, f"payload is {len(payload)} bytes; a measurement needs at least 5"
        )
    flags = payload[0]
    needed = _MANDATORY_LENGTH + sum(size for bit, size, _ in _OPTIONAL_FIELDS if flags & bit)
    if len(payload) < needed:
        names = [name for bit, _, name in _OPTIONAL_FIELDS if flags & bit]
        names.append("Fahrenheit" if flags & _FAHRENHEIT else "Celsius")
        raise DecodeError(
            CHANNEL,
            f"payload is {len(payload)} bytes but flags 0x{flags:02x} ({', '.join(names)}) "
            f"need {needed}",
        )
    unit = Unit.DEGF if flags & _FAHRENHEIT else Unit.CEL
    reading = read_float(payload, 1, CHANNEL)
    offset = _MANDATORY_LENGTH
    measured_at = None
    if flags & _HAS_TIME_STAMP:
        measured_at = read_date_time(payload, offset, ctx.zone, CHANNEL)
        offset += DATE_TIME_LENGTH
    observation_flags: tuple[str, ...] = ()
    if flags & _HAS_TYPE:
        if payload[offset] in _SITES:
            observation_flags = (f"site:{_SITES[payload[offset]]}",)
        offset += 1
    if reading.value is not None:
        low, high = _CELSIUS
        if not low <= _celsius(reading.value, unit) <= high:
            observation_flags = (*observation_flags, "implausible")
    if len(payload) > offset:
        observation_flags = (*observation_flags, "trailing_bytes")
    metric = METRICS["body_temperature"]
    return [
        Observation(
            code=metric.loinc,
            mdc=metric.mdc,
            value=reading.value,
            unit=unit,
            measured_at=measured_at,
            flags=observation_flags,
            absent_reason=reading.absent,
        )
    ]
