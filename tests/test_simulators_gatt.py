"""The GATT simulators: spec vectors byte for byte, and decode(encode(x)) round trips."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from adapters import (
    ble_battery,
    ble_body_composition,
    ble_date_time,
    ble_glucose,
    ble_glucose_context,
    ble_icp,
    ble_plx,
    ble_temperature,
    ble_weight,
)
from adapters.model import DecodeContext, Event, Observation
from simulators import gatt as sim

ZONE = ZoneInfo("Europe/Stockholm")
CTX = DecodeContext(zone=ZONE)
AT = datetime(2024, 5, 6, 6, 30, 15, tzinfo=UTC)


def test_temperature_encoder_writes_the_nordic_vector() -> None:
    # Nordic TemperatureMeasurementDataCallbackTest: 37.60 °C, 2012-12-05 11:50:27, finger.
    reading = sim.TemperatureReading(Decimal("37.60"), site=4,
                                     measured_at=datetime(2012, 12, 5, 10, 50, 27, tzinfo=UTC))
    assert sim.encode_temperature(reading, ZONE).hex() == "06b00e00fedc070c050b321b04"


def test_glucose_encoder_writes_the_jdrf_record() -> None:
    # JDRF GlucoseMeasurementCharacteristicTest.parse: 84 mg/dL is sent as 84e-5 kg/L.
    reading = sim.GlucoseReading(1, datetime(2018, 6, 6, 12, 53, 14, tzinfo=UTC), Decimal(84),
                                 time_offset=0, sample_type=9, sample_location=1,
                                 context_follows=True)
    assert sim.encode_glucose(reading, ZONE).hex() == "130100e20706060e350e000054b019"


def test_plx_encoders_write_the_spezi_vectors() -> None:
    # SpeziBluetooth PLXTests testSpotCheckMeasurementCoding and testFullMeasurementCoding.
    spot = sim.PlxSpotCheck(Decimal("94.0"), Decimal("147.0"),
                            measured_at=datetime(2024, 11, 29, 22, 8, 57, tzinfo=UTC),
                            status=0x4020, device_status=0x22, pai=Decimal("8.70"))
    assert sim.encode_plx_spot_check(spot, ZONE) == bytes(
        [15, 172, 243, 190, 245, 232, 7, 11, 29, 23, 8, 57, 32, 64, 34, 0, 0, 102, 227])
    continuous = sim.PlxContinuous(
        Decimal("99.0"), Decimal("97.0"), fast=(Decimal("97.0"), Decimal("137.0")),
        slow=(Decimal("98.0"), Decimal("69.0")), status=0x0120, device_status=0,
        pai=Decimal("8.90"))
    assert sim.encode_plx_continuous(continuous) == bytes(
        [31, 222, 243, 202, 243, 202, 243, 90, 245, 212, 243, 178, 242, 32, 1, 0, 0, 0, 122, 227])


def test_weight_encoder_writes_the_ronanb96_vector_with_spec_flags() -> None:
    # RonanB96 test 6 sends flags 0x1f, setting the RFU b4 for its "height present"; the spec's
    # b3 already announces BMI and height, so a spec-following scale sends 0x0f.
    reading = sim.WeightReading(Decimal("157.00"), imperial=True, user_id=3, bmi=Decimal("24.5"),
                                height=Decimal("68.0"),
                                measured_at=datetime(2023, 12, 25, 13, 30, 45, tzinfo=UTC))
    assert sim.encode_weight(reading, ZONE).hex() == "0f543de7070c190e1e2d03f500a802"


def test_small_encoders_write_the_nordic_vectors() -> None:
    assert sim.encode_battery(sim.BatteryLevel(100)) == b"\x64"
    clock = sim.DeviceClock(datetime(2018, 4, 17, 15, 51))
    assert sim.encode_device_clock(clock).hex() == "e20704110f3300"
    assert sim.encode_device_clock(sim.DeviceClock(None)) == bytes(7)
    icp = sim.CuffPressure(Decimal("21.5"), unused_as_nan=False)
    assert sim.encode_cuff_pressure(icp).hex() == "00d7f000000000"


def test_encoders_refuse_values_off_the_wire_grid() -> None:
    with pytest.raises(ValueError, match=r"not a whole multiple of 0\.005"):
        sim.encode_weight(sim.WeightReading(Decimal("70.001")))
    with pytest.raises(ValueError, match="u16 range"):
        sim.encode_weight(sim.WeightReading(Decimal("327.675")))  # 0xFFFF is "unsuccessful"


def test_cuff_pressure_round_trip() -> None:
    reading = sim.CuffPressure(Decimal("143"), kpa=False, measured_at=AT, pulse=Decimal("71"),
                               user_id=2, status=0x0001)
    (event,) = ble_icp.decode(sim.encode_cuff_pressure(reading, ZONE), CTX)
    assert event == Event("bp.cuff_pressure", AT, {
        "pressure": Decimal(143), "unit": "mm[Hg]", "absent_reason": None,
        "pulse_rate": Decimal(71), "flags": ["body_movement"], "user": 2})


def test_weight_round_trips() -> None:
    rng = random.Random(7)
    for _ in range(200):
        imperial = rng.random() < 0.5
        mass_step, _ = ble_weight.MASS_STEP[imperial]
        height_step, _ = ble_weight.HEIGHT_STEP[imperial]
        reading = sim.WeightReading(
            rng.randint(400, 60000) * mass_step, imperial=imperial, user_id=rng.randint(0, 254),
            bmi=rng.randint(80, 900) * Decimal("0.1"), height=rng.randint(1000, 2400) * height_step,
            measured_at=AT + timedelta(days=rng.randint(0, 3000)))
        weight, bmi, height = ble_weight.decode(sim.encode_weight(reading, ZONE), CTX)
        assert isinstance(weight, Observation) and isinstance(height, Observation)
        assert isinstance(bmi, Observation)
        assert (weight.value, bmi.value, height.value) == (reading.weight, reading.bmi,
                                                           reading.height)
        assert (weight.measured_at, weight.device_user) == (reading.measured_at, reading.user_id)
    (event,) = ble_weight.decode(sim.encode_weight(sim.WeightReading(None, user_id=4)), CTX)
    assert event == Event("scale.measurement_unsuccessful", None,
                          {"measurement": "weight", "user": 4, "flags": []})


def test_body_composition_round_trip() -> None:
    reading = sim.BodyComposition(
        Decimal("21.4"), imperial=True, measured_at=AT, user_id=1, basal_metabolism=Decimal(6500),
        muscle_percentage=Decimal("38.0"), muscle_mass=Decimal("70.10"),
        fat_free_mass=Decimal("130.00"), soft_lean_mass=Decimal("120.50"),
        body_water_mass=Decimal("95.00"), impedance=Decimal("498.7"), weight=Decimal("165.40"),
        height=Decimal("70.0"), multiple_packet=True)
    fat, weight, height, event = ble_body_composition.decode(
        sim.encode_body_composition(reading, ZONE), CTX)
    assert [getattr(r, "value", None) for r in (fat, weight, height)] == [
        reading.body_fat, reading.weight, reading.height]
    assert isinstance(event, Event)
    assert {key: part["value"] for key, part in event.data.items()
            if isinstance(part, dict)} == {
        "basal_metabolism": reading.basal_metabolism,
        "muscle_percentage": reading.muscle_percentage, "muscle_mass": reading.muscle_mass,
        "fat_free_mass": reading.fat_free_mass, "soft_lean_mass": reading.soft_lean_mass,
        "body_water_mass": reading.body_water_mass, "impedance": reading.impedance}
    assert event.data["flags"] == ["multiple_packet"]


def test_plx_round_trips_including_specials() -> None:
    spot = sim.PlxSpotCheck(Decimal("NaN"), Decimal("62"), measured_at=AT, clock_not_set=True)
    spo2, pulse = ble_plx.decode_spot_check(sim.encode_plx_spot_check(spot, ZONE), CTX)
    assert isinstance(spo2, Observation) and isinstance(pulse, Observation)
    assert (spo2.value, str(spo2.absent_reason), pulse.value) == (None, "not-a-number",
                                                                  Decimal(62))
    assert pulse.measured_at is None and pulse.flags == ("clock_not_set",)
    continuous = sim.PlxContinuous(Decimal("96"), Decimal("64"), slow=(Decimal("97"),
                                   Decimal("Infinity")), pai=Decimal("2.5"))
    records = ble_plx.decode_continuous(sim.encode_plx_continuous(continuous), CTX)
    assert [getattr(r, "value", None) for r in records[:2]] == [96, 64]
    assert records[2] == Event("oximeter.spo2pr_averages", None, {
        "flags": [], "slow": {"spo2": {"value": Decimal(97), "absent_reason": None},
                              "pulse_rate": {"value": None,
                                             "absent_reason": "positive-infinity"}}})
    assert records[3] == Event("oximeter.pulse_amplitude_index", None, {
        "value": Decimal("2.5"), "unit": "%", "absent_reason": None, "flags": []})


def test_glucose_round_trips() -> None:
    rng = random.Random(11)
    for sequence in range(200):
        mmol = rng.random() < 0.5
        value = Decimal(rng.randint(20, 300)).scaleb(-1) if mmol else Decimal(rng.randint(20, 600))
        reading = sim.GlucoseReading(sequence, AT + timedelta(hours=sequence), value, mmol=mmol,
                                     time_offset=rng.randint(-600, 600),
                                     sample_type=rng.randint(1, 10),
                                     sample_location=rng.choice([1, 2, 3, 4, 15]))
        (observation,) = ble_glucose.decode(sim.encode_glucose(reading, ZONE), CTX)
        assert isinstance(observation, Observation)
        assert (observation.value, observation.sequence) == (value, sequence)
        # base time + offset on the wall clock; AT's hours avoid the DST changes of 2024.
        expected = (reading.base_time or AT) + timedelta(minutes=reading.time_offset or 0)
        assert observation.measured_at == expected


def test_glucose_context_round_trip() -> None:
    context = sim.GlucoseContext(77, carbohydrate=(2, Decimal(45)), meal=2, tester_health=(1, 4),
                                 exercise=(1800, 65), medication=(1, Decimal("4.5")),
                                 medication_ml=True, hba1c=Decimal("6.8"), extended_flags=0)
    (event,) = ble_glucose_context.decode(sim.encode_glucose_context(context), CTX)
    assert event.data == {
        "sequence": 77, "extended_flags": 0,
        "carbohydrate": {"kind": "lunch", "amount": Decimal(45), "unit": "g",
                         "absent_reason": None},
        "meal": "postprandial", "tester": "self", "health": "under_stress",
        "exercise": {"duration_s": 1800, "intensity_percent": 65},
        "medication": {"kind": "rapid_acting_insulin", "amount": Decimal("4.5"), "unit": "mL",
                       "absent_reason": None},
        "hba1c": {"value": Decimal("6.8"), "unit": "%", "absent_reason": None}, "flags": []}


def test_temperature_battery_and_clock_round_trips() -> None:
    reading = sim.TemperatureReading(Decimal("99.5"), fahrenheit=True, measured_at=AT, site=6)
    (observation,) = ble_temperature.decode(sim.encode_temperature(reading, ZONE), CTX)
    assert (observation.value, observation.unit, observation.flags) == (
        Decimal("99.5"), "[degF]", ("site:mouth",))
    assert ble_battery.decode(sim.encode_battery(sim.BatteryLevel(42)), CTX)[0].data == {
        "level": 42}
    wall = datetime(2031, 1, 2, 3, 4, 5)
    (event,) = ble_date_time.decode(sim.encode_device_clock(sim.DeviceClock(wall)), CTX)
    assert event.data == {"device_time": "2031-01-02T03:04:05"}
