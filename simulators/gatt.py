"""The device side of the BLE health characteristics: exact GATT values from small readings.

One frozen dataclass per characteristic and one ``encode_*`` function writing its value as the
Bluetooth SIG specifies it (little-endian; layouts in the matching ``adapters/ble_*`` module and
PROTOCOLS.md §2). Decimal NaN and ±Infinity are written as the IEEE 11073 special words, so the
simulators can send what faulty devices send.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal

from adapters import ble_weight
from adapters.gatt_time import encode_date_time
from adapters.ieee11073 import encode_float, encode_sfloat
from adapters.model import DEFAULT_ZONE

_NAN_SFLOAT, _NAN_FLOAT = b"\xff\x07", b"\xff\xff\x7f\x00"


@dataclass(frozen=True, slots=True)
class CuffPressure:
    """0x2A36: the pressure of an inflating cuff; the two unused slots hold NaN or zero."""

    pressure: Decimal
    kpa: bool = False
    measured_at: datetime | None = None
    pulse: Decimal | None = None
    user_id: int | None = None
    status: int | None = None
    unused_as_nan: bool = True


@dataclass(frozen=True, slots=True)
class WeightReading:
    """0x2A9D: kg (or lb when ``imperial``); weight None sends 0xFFFF, "unsuccessful"."""

    weight: Decimal | None
    imperial: bool = False
    measured_at: datetime | None = None
    user_id: int | None = None
    bmi: Decimal | None = None
    height: Decimal | None = None


@dataclass(frozen=True, slots=True)
class BodyComposition:
    """0x2A9C: percentages, kJ, Ohm and kg/m (lb/in when ``imperial``); body fat None = 0xFFFF."""

    body_fat: Decimal | None
    imperial: bool = False
    measured_at: datetime | None = None
    user_id: int | None = None
    basal_metabolism: Decimal | None = None
    muscle_percentage: Decimal | None = None
    muscle_mass: Decimal | None = None
    fat_free_mass: Decimal | None = None
    soft_lean_mass: Decimal | None = None
    body_water_mass: Decimal | None = None
    impedance: Decimal | None = None
    weight: Decimal | None = None
    height: Decimal | None = None
    multiple_packet: bool = False


@dataclass(frozen=True, slots=True)
class PlxSpotCheck:
    """0x2A5E: SpO2 % and pulse rate /min, with optional time, statuses and PAI."""

    spo2: Decimal
    pulse: Decimal
    measured_at: datetime | None = None
    clock_not_set: bool = False
    status: int | None = None
    device_status: int | None = None
    pai: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PlxContinuous:
    """0x2A5F: the Normal SpO2/PR pair, optional Fast and Slow pairs, statuses and PAI."""

    spo2: Decimal
    pulse: Decimal
    fast: tuple[Decimal, Decimal] | None = None
    slow: tuple[Decimal, Decimal] | None = None
    status: int | None = None
    device_status: int | None = None
    pai: Decimal | None = None


@dataclass(frozen=True, slots=True)
class GlucoseReading:
    """0x2A18: concentration in mg/dL (mmol/L when ``mmol``), sent as kg/L (mol/L)."""

    sequence: int
    base_time: datetime | None
    concentration: Decimal | None = None
    mmol: bool = False
    time_offset: int | None = None
    sample_type: int = 1
    sample_location: int = 1
    sensor_status: int | None = None
    context_follows: bool = False


@dataclass(frozen=True, slots=True)
class GlucoseContext:
    """0x2A34: carbohydrate (id, g), medication (id, mg or mL), HbA1c %, and the rest."""

    sequence: int
    carbohydrate: tuple[int, Decimal] | None = None
    meal: int | None = None
    tester_health: tuple[int, int] | None = None
    exercise: tuple[int, int] | None = None
    medication: tuple[int, Decimal] | None = None
    medication_ml: bool = False
    hba1c: Decimal | None = None
    extended_flags: int | None = None


@dataclass(frozen=True, slots=True)
class TemperatureReading:
    """0x2A1C: °C (°F when ``fahrenheit``) with optional time and site (temperature type)."""

    value: Decimal
    fahrenheit: bool = False
    measured_at: datetime | None = None
    site: int | None = None


@dataclass(frozen=True, slots=True)
class BatteryLevel:
    """0x2A19: charge in percent."""

    level: int


@dataclass(frozen=True, slots=True)
class DeviceClock:
    """0x2A08: the device's naive wall clock; None sends the all-unknown date."""

    wall_clock: datetime | None


def _sfloat(value: Decimal) -> bytes:
    if value.is_nan():
        return _NAN_SFLOAT
    if value.is_infinite():
        return b"\xfe\x07" if value > 0 else b"\x02\x08"
    return encode_sfloat(value)


def _float(value: Decimal) -> bytes:
    if value.is_nan():
        return _NAN_FLOAT
    if value.is_infinite():
        return b"\xfe\xff\x7f\x00" if value > 0 else b"\x02\x00\x80\x00"
    return encode_float(value)


def _u16(value: Decimal | int, step: Decimal = Decimal(1)) -> bytes:
    """``value`` / ``step`` as u16; ValueError unless that is a whole number below 0xFFFF."""
    raw = Decimal(value) / step
    if raw != raw.to_integral_value() or not 0 <= raw < 0xFFFF:
        raise ValueError(f"{value} is not a whole multiple of {step} in the u16 range")
    return int(raw).to_bytes(2, "little")


def _optional(flags: int, parts: list[tuple[int, bytes | None]]) -> tuple[int, bytes]:
    """OR in the flag of every present field and join the fields, in wire order."""
    body = b""
    for bit, part in parts:
        if part is not None:
            flags |= bit
            body += part
    return flags, body


def _stamp(moment: datetime | None, zone: tzinfo) -> bytes | None:
    return None if moment is None else encode_date_time(moment, zone)


def _byte(value: int | None) -> bytes | None:
    return None if value is None else bytes([value])


def encode_cuff_pressure(reading: CuffPressure, zone: tzinfo = DEFAULT_ZONE) -> bytes:
    """The 0x2A36 value."""
    unused = _NAN_SFLOAT * 2 if reading.unused_as_nan else bytes(4)
    flags, tail = _optional(int(reading.kpa), [
        (0x02, _stamp(reading.measured_at, zone)),
        (0x04, None if reading.pulse is None else _sfloat(reading.pulse)),
        (0x08, _byte(reading.user_id)),
        (0x10, None if reading.status is None else reading.status.to_bytes(2, "little")),
    ])
    return bytes([flags]) + _sfloat(reading.pressure) + unused + tail


def encode_weight(reading: WeightReading, zone: tzinfo = DEFAULT_ZONE) -> bytes:
    """The 0x2A9D value; BMI and height travel together or not at all."""
    mass_step, _ = ble_weight.MASS_STEP[reading.imperial]
    height_step, _ = ble_weight.HEIGHT_STEP[reading.imperial]
    weight = b"\xff\xff" if reading.weight is None else _u16(reading.weight, mass_step)
    bmi_height = None
    if reading.bmi is not None and reading.height is not None:
        bmi_height = _u16(reading.bmi, Decimal("0.1")) + _u16(reading.height, height_step)
    flags, tail = _optional(int(reading.imperial), [
        (0x02, _stamp(reading.measured_at, zone)), (0x04, _byte(reading.user_id)),
        (0x08, bmi_height),
    ])
    return bytes([flags]) + weight + tail


def encode_body_composition(reading: BodyComposition, zone: tzinfo = DEFAULT_ZONE) -> bytes:
    """The 0x2A9C value (flags u16)."""
    mass_step, _ = ble_weight.MASS_STEP[reading.imperial]
    height_step, _ = ble_weight.HEIGHT_STEP[reading.imperial]
    tenth = Decimal("0.1")
    u16_fields = [
        (reading.basal_metabolism, Decimal(1)), (reading.muscle_percentage, tenth),
        (reading.muscle_mass, mass_step), (reading.fat_free_mass, mass_step),
        (reading.soft_lean_mass, mass_step), (reading.body_water_mass, mass_step),
        (reading.impedance, tenth), (reading.weight, mass_step), (reading.height, height_step),
    ]
    flags, tail = _optional(int(reading.imperial) | (0x1000 * reading.multiple_packet), [
        (0x02, _stamp(reading.measured_at, zone)), (0x04, _byte(reading.user_id)),
        *((0x08 << index, None if value is None else _u16(value, step))
          for index, (value, step) in enumerate(u16_fields)),
    ])
    fat = b"\xff\xff" if reading.body_fat is None else _u16(reading.body_fat, tenth)
    return flags.to_bytes(2, "little") + fat + tail


def _status_fields(status: int | None, device_status: int | None) -> list[bytes | None]:
    return [None if status is None else status.to_bytes(2, "little"),
            None if device_status is None else device_status.to_bytes(3, "little")]


def encode_plx_spot_check(reading: PlxSpotCheck, zone: tzinfo = DEFAULT_ZONE) -> bytes:
    """The 0x2A5E value."""
    status, device = _status_fields(reading.status, reading.device_status)
    flags, tail = _optional(0x10 * reading.clock_not_set, [
        (0x01, _stamp(reading.measured_at, zone)), (0x02, status), (0x04, device),
        (0x08, None if reading.pai is None else _sfloat(reading.pai)),
    ])
    return bytes([flags]) + _sfloat(reading.spo2) + _sfloat(reading.pulse) + tail


def encode_plx_continuous(reading: PlxContinuous) -> bytes:
    """The 0x2A5F value."""
    status, device = _status_fields(reading.status, reading.device_status)
    fast, slow = ((None if pair is None else _sfloat(pair[0]) + _sfloat(pair[1]))
                  for pair in (reading.fast, reading.slow))
    flags, tail = _optional(0, [
        (0x01, fast), (0x02, slow), (0x04, status), (0x08, device),
        (0x10, None if reading.pai is None else _sfloat(reading.pai)),
    ])
    return bytes([flags]) + _sfloat(reading.spo2) + _sfloat(reading.pulse) + tail


def encode_glucose(reading: GlucoseReading, zone: tzinfo = DEFAULT_ZONE) -> bytes:
    """The 0x2A18 value: mg/dL -> kg/L (10^-5) and mmol/L -> mol/L (10^-3), exactly."""
    concentration = None
    if reading.concentration is not None:
        places = -3 if reading.mmol else -5
        value = reading.concentration
        kind = bytes([(reading.sample_location << 4) | reading.sample_type])
        concentration = _sfloat(value if not value.is_finite() else value.scaleb(places)) + kind
    offset, status = reading.time_offset, reading.sensor_status
    flags, tail = _optional(0x04 * reading.mmol | 0x10 * reading.context_follows, [
        (0x01, None if offset is None else offset.to_bytes(2, "little", signed=True)),
        (0x02, concentration),
        (0x08, None if status is None else status.to_bytes(2, "little")),
    ])
    base = encode_date_time(reading.base_time, zone)
    return bytes([flags]) + reading.sequence.to_bytes(2, "little") + base + tail


def encode_glucose_context(context: GlucoseContext) -> bytes:
    """The 0x2A34 value: g -> kg, mg -> kg, mL -> L, exactly."""
    def amount(pair: tuple[int, Decimal] | None, places: int) -> bytes | None:
        if pair is None:
            return None
        kind, value = pair
        return bytes([kind]) + _sfloat(value if not value.is_finite() else value.scaleb(places))

    tester_health, exercise = context.tester_health, context.exercise
    tester_byte = None if tester_health is None else tester_health[1] << 4 | tester_health[0]
    exercise_bytes = None
    if exercise is not None:
        exercise_bytes = exercise[0].to_bytes(2, "little") + bytes([exercise[1]])
    flags, tail = _optional(0x20 * context.medication_ml, [
        (0x80, _byte(context.extended_flags)),
        (0x01, amount(context.carbohydrate, -3)),
        (0x02, _byte(context.meal)),
        (0x04, _byte(tester_byte)),
        (0x08, exercise_bytes),
        (0x10, amount(context.medication, -3 if context.medication_ml else -6)),
        (0x40, None if context.hba1c is None else _sfloat(context.hba1c)),
    ])
    return bytes([flags]) + context.sequence.to_bytes(2, "little") + tail


def encode_temperature(reading: TemperatureReading, zone: tzinfo = DEFAULT_ZONE) -> bytes:
    """The 0x2A1C value (FLOAT temperature)."""
    flags, tail = _optional(int(reading.fahrenheit), [
        (0x02, _stamp(reading.measured_at, zone)), (0x04, _byte(reading.site)),
    ])
    return bytes([flags]) + _float(reading.value) + tail


def encode_battery(reading: BatteryLevel) -> bytes:
    """The 0x2A19 value."""
    return bytes([reading.level])


def encode_device_clock(reading: DeviceClock) -> bytes:
    """The 0x2A08 value of the device's own clock."""
    if reading.wall_clock is None:
        return encode_date_time(None)
    return encode_date_time(reading.wall_clock.replace(tzinfo=UTC), UTC)
