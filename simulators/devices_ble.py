"""Simulated BLE health devices: exact GATT characteristic values from a person's physiology.

The wire layouts are in the matching ``adapters/ble_*`` modules; the encoders are
``simulators.gatt`` and ``simulators.bpm``. When the device clock is unset the time stamp is
the all-unknown date (zeros), as meters send after a battery swap; a pulse oximeter instead
sets its "device clock not set" flag and keeps its free-running time.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from decimal import Decimal

from simulators import bpm, gatt
from simulators.devices_base import BleDevice, Reading, blank_time

# Time stamp offsets in each value: after the flags and the mandatory fields.
_BPM_TIME_AT = 7  # flags u8 + 3 SFLOAT
_WEIGHT_TIME_AT = 3  # flags u8 + weight u16
_BODY_TIME_AT = 4  # flags u16 + body fat u16
_TEMPERATURE_TIME_AT = 5  # flags u8 + FLOAT
_GLUCOSE_BATTERY_LOW = 0x0001  # sensor status annunciation b0
_MEALS = (7.5, 12.0, 18.0)  # local hours, as in simulators.physiology
_GLUCOSE_MEMORY = 500  # records a meter keeps; the oldest is overwritten, as on real meters


class BloodPressureMonitor(BleDevice):
    """An upper-arm cuff: 0x2A35 with time, pulse, user 1, now and then a status bit."""

    kind = "blood_pressure_monitor"

    def measurements(self, at: datetime) -> list[Reading]:
        """One cuff reading."""
        value = self.person.blood_pressure(at)
        moment, blank = self.timed(at)
        roll = self.rng.random()
        status = bpm.STATUS_BODY_MOVEMENT if roll < 0.04 else (
            bpm.STATUS_IRREGULAR if roll < 0.06 else None)
        payload = bpm.encode(bpm.BpReading(
            value.systolic, value.diastolic, value.mean, value.pulse,
            measured_at=moment.replace(microsecond=0), user_id=1, status=status), self.zone)
        return [("ble/2a35", blank_time(payload, _BPM_TIME_AT) if blank else payload)]


def _kg(value: Decimal) -> Decimal:
    """Round to the scale's 0.005 kg resolution."""
    return (value / Decimal("0.005")).quantize(Decimal(1)) * Decimal("0.005")


class Scale(BleDevice):
    """A bathroom scale: 0x2A9D in kg with time, user 1, BMI and height."""

    kind = "scale"

    def weight_value(self, at: datetime, weight: Decimal) -> bytes:
        """The 0x2A9D value for a weighing at ``at``."""
        height = Decimal(str(round(self.person.traits.height_m, 3)))
        bmi = (weight / (height * height)).quantize(Decimal("0.1"))
        moment, blank = self.timed(at)
        payload = gatt.encode_weight(gatt.WeightReading(
            weight, measured_at=moment, user_id=1, bmi=bmi, height=height), self.zone)
        return blank_time(payload, _WEIGHT_TIME_AT) if blank else payload

    def measurements(self, at: datetime) -> list[Reading]:
        """One weighing."""
        return [("ble/2a9d", self.weight_value(at, _kg(self.person.weight(at))))]


class BodyCompositionScale(Scale):
    """A body-composition scale: 0x2A9C (fat, impedance, weight), then 0x2A9D as real ones do."""

    kind = "body_composition_scale"

    def measurements(self, at: datetime) -> list[Reading]:
        """One weighing with bio-impedance."""
        weight = _kg(self.person.weight(at))
        fat = Decimal(str(round(28.0 + float(weight - Decimal(80)) * 0.3
                                + self.rng.gauss(0, 0.6), 1)))
        impedance = Decimal(str(round(480 + self.rng.gauss(0, 12), 1)))
        moment, blank = self.timed(at)
        payload = gatt.encode_body_composition(gatt.BodyComposition(
            fat, measured_at=moment, user_id=1, impedance=impedance, weight=weight), self.zone)
        if blank:
            payload = blank_time(payload, _BODY_TIME_AT)
        return [("ble/2a9c", payload), ("ble/2a9d", self.weight_value(at, weight))]


class PulseOximeter(BleDevice):
    """A fingertip oximeter used for spot checks: 0x2A5E, flagging an unset clock."""

    kind = "pulse_oximeter"

    def measurements(self, at: datetime) -> list[Reading]:
        """One spot check."""
        spo2, pulse = self.person.spo2(at)
        reading = gatt.PlxSpotCheck(
            spo2, pulse, measured_at=self.state.free_running(at),
            clock_not_set=not self.state.clock_set)
        return [("ble/2a5e", gatt.encode_plx_spot_check(reading, self.zone))]


class ContinuousPulseOximeter(BleDevice):
    """A wrist oximeter worn at night: 0x2A5F every interval between 22:00 and 07:00."""

    kind = "pulse_oximeter_continuous"

    def measurements(self, at: datetime) -> list[Reading]:
        """One continuous value, at night only."""
        hour = at.astimezone(self.zone).hour
        if 7 <= hour < 22:
            return []
        spo2, pulse = self.person.spo2(at)
        return [("ble/2a5f", gatt.encode_plx_continuous(gatt.PlxContinuous(spo2, pulse)))]


class GlucoseMeter(BleDevice):
    """A glucose meter with a record memory: 0x2A18, sometimes 0x2A34 context with the same seq."""

    kind = "glucose_meter"

    def setup(self) -> None:
        """An empty memory; the first record is number 1."""
        self.sequence = 0
        self._memory: deque[tuple[int, list[Reading]]] = deque(maxlen=_GLUCOSE_MEMORY)

    def measurements(self, at: datetime) -> list[Reading]:
        """One test; the record (and its context) is also kept in memory for replays."""
        self.sequence = self.sequence % 0xFFFF + 1
        with_context = self.rng.random() < 0.3
        clock = self.state.clock(at)
        record = gatt.encode_glucose(gatt.GlucoseReading(
            self.sequence, None if clock is None else clock.replace(microsecond=0),
            self.person.glucose(at), mmol=True, time_offset=0,
            sensor_status=_GLUCOSE_BATTERY_LOW if self.state.battery_low else None,
            context_follows=with_context), self.zone)
        stored: list[Reading] = [("ble/2a18", record)]
        if with_context:
            local = at.astimezone(self.zone)
            hour = local.hour + local.minute / 60
            # Meal codes: 1 preprandial, 2 postprandial (within two hours of a meal).
            meal = 2 if any(0 <= hour - start < 2 for start in _MEALS) else 1
            stored.append(("ble/2a34", gatt.encode_glucose_context(
                gatt.GlucoseContext(self.sequence, meal=meal))))
        self._memory.append((self.sequence, stored))
        return list(stored)

    def records_after(self, sequence: int) -> list[Reading]:
        """The stored records after ``sequence``, oldest first, each followed by its context."""
        return [reading for number, stored in self._memory if number > sequence
                for reading in stored]


class Thermometer(BleDevice):
    """An ear thermometer: 0x2A1C in °C with time and site (3, ear)."""

    kind = "thermometer"
    drain_per_day = 1.0

    def measurements(self, at: datetime) -> list[Reading]:
        """One temperature."""
        moment, blank = self.timed(at)
        payload = gatt.encode_temperature(gatt.TemperatureReading(
            self.person.temperature(at), measured_at=moment, site=3), self.zone)
        return [("ble/2a1c", blank_time(payload, _TEMPERATURE_TIME_AT) if blank else payload)]
