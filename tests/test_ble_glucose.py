"""Glucose Measurement (0x2A18): JDRF and Nordic vectors, trap 6, time offset and sample types."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from adapters.ble_glucose import decode
from adapters.errors import DecodeError
from adapters.model import AbsentReason, DecodeContext, Event, Observation, Unit, dumps

CTX = DecodeContext(zone=ZoneInfo("Europe/Stockholm"))
MASS, MOLES = "2339-0", "15074-8"
FINGER = "site:finger"

# markiantorno/JDRFAndroidBLEParser GlucoseMeasurementCharacteristicTest.parse: flags 0x13
# (time offset, concentration, context follows), seq 1, 2018-06-06 14:53:14, offset 0,
# 0xB054 = 84e-5 kg/L, type 9 (ISF, low nibble) at location 1 (finger, high nibble).
JDRF_1 = bytes.fromhex("130100e20706060e350e000054b019")
# Nordic GlucoseMeasurementDataCallbackTest: flags 0x1b, seq 1, 2019-02-27 11:10:30, offset
# -5 min (signed), 30 kg/L, capillary plasma at finger, status 0x0105.
NORDIC = bytes.fromhex("1b0100e307021b0b0a1efbff1e00120501")


def glucose(value: str | None, mdc: int, flags: tuple[str, ...], *, sequence: int,
            at: datetime | None, code: str = MASS, unit: Unit = Unit.MG_PER_DL,
            absent: AbsentReason | None = None) -> Observation:
    """An expected glucose observation."""
    return Observation(code=code, mdc=mdc, value=None if value is None else Decimal(value),
                       unit=unit, measured_at=at, flags=flags, absent_reason=absent,
                       sequence=sequence)


@pytest.mark.parametrize(
    ("hex_payload", "expected"),
    [
        # JDRF parse: 84 mg/dL, CEST 14:53:14 = 12:53:14 UTC.
        (JDRF_1.hex(), glucose("84", 160212, ("sample:interstitial_fluid", FINGER,
                                               "context_follows"), sequence=1,
                               at=datetime(2018, 6, 6, 12, 53, 14, tzinfo=UTC))),
        # JDRF parse_caseTwo: offset +16 min: 14:54:18 + 16 = 15:10:18 CEST; 96 mg/dL.
        ("030200e20706060e3612100060b011",
         glucose("96", 160184, ("sample:capillary_whole_blood", FINGER), sequence=2,
                 at=datetime(2018, 6, 6, 13, 10, 18, tzinfo=UTC))),
        # JDRF parse_caseThree: 117 mg/dL capillary plasma.
        ("030300e20706060e362e000075b012",
         glucose("117", 160188, ("sample:capillary_plasma", FINGER), sequence=3,
                 at=datetime(2018, 6, 6, 12, 54, 46, tzinfo=UTC))),
        # JDRF parse_caseFour: its one-sided assert passes for 117, but 0xB03F is 63 mg/dL.
        ("030400e20706060e390400003fb011",
         glucose("63", 160184, ("sample:capillary_whole_blood", FINGER), sequence=4,
                 at=datetime(2018, 6, 6, 12, 57, 4, tzinfo=UTC))),
    ],
)
def test_glucose_jdrf_records(hex_payload: str, expected: Observation) -> None:
    result = decode(bytes.fromhex(hex_payload), CTX)
    assert result == [expected]
    assert [str(r.value) for r in result if isinstance(r, Observation)] == [str(expected.value)]


def test_glucose_nordic_negative_offset_and_status_bits() -> None:
    # Offset 0xFFFB = -5 min (signed, trap 6): 11:05:30 CET = 10:05:30 UTC. Status 0x0105 is
    # b0 battery low, b2 sample size insufficient (Nordic's comment says "device fault"; its
    # own assert has general device fault false) and b8 temperature too low. 30 kg/L is
    # 3 000 000 mg/dL: kept, flagged.
    flags = ("sample:capillary_plasma", FINGER, "device_battery_low", "sample_size_insufficient",
             "sensor_temperature_too_low", "context_follows", "implausible")
    expected = glucose("3000000", 160188, flags, sequence=1,
                       at=datetime(2019, 2, 27, 10, 5, 30, tzinfo=UTC))
    assert decode(NORDIC, CTX) == [expected]


def test_glucose_mmol_per_litre_uses_the_moles_loinc() -> None:
    # Constructed: flags 0x06 (concentration, mol/L), seq 5, 0xC037 = 55e-4 mol/L = 5.5 mmol/L.
    payload = bytes.fromhex("060500e8070506081e0037c011")
    expected = glucose("5.5", 160184, ("sample:capillary_whole_blood", FINGER), sequence=5,
                       at=datetime(2024, 5, 6, 6, 30, tzinfo=UTC), code=MOLES,
                       unit=Unit.MMOL_PER_L)
    assert decode(payload, CTX) == [expected]
    assert str(decode(payload, CTX)[0].to_json()["value"]) == "5.5"


def test_glucose_extra_scale_is_not_applied_trap_6() -> None:
    # 0xB054 read with Current Health's extra 10^-5 would be 0.0000000084; it is 84 mg/dL.
    value = decode(JDRF_1, CTX)[0]
    assert isinstance(value, Observation)
    assert value.value == Decimal(84)


@pytest.mark.parametrize(
    ("kind", "mdc", "flag"),
    [(7, 160020, "sample:undetermined_whole_blood"), (8, 160368, "sample:undetermined_plasma"),
     (10, 160208, "sample:control_solution"), (0, 160020, None), (15, 160020, None)],
)
def test_glucose_sample_type_selects_the_mdc_code(kind: int, mdc: int, flag: str | None) -> None:
    # Constructed: type in the low nibble, location 15 "not available" in the high nibble.
    payload = bytes.fromhex("020700e8070506081e0054b0") + bytes([0xF0 | kind])
    result = decode(payload, CTX)[0]
    assert isinstance(result, Observation)
    assert (result.mdc, result.flags) == (mdc, () if flag is None else (flag,))


@pytest.mark.parametrize(
    ("offset_hex", "flag"), [("ff7f", "time_offset_overrun"), ("0080", "time_offset_underrun")]
)
def test_glucose_offset_overrun_and_underrun_drop_the_time(offset_hex: str, flag: str) -> None:
    payload = bytes.fromhex("030100e8070506081e00" + offset_hex + "54b011")
    expected = glucose("84", 160184, ("sample:capillary_whole_blood", FINGER, flag), sequence=1,
                       at=None)
    assert decode(payload, CTX) == [expected]


def test_glucose_unknown_base_date_gives_no_time_trap_7() -> None:
    # Constructed: flags 0x03, seq 1, base time 0000-00-00 08:00:00, offset 0, 84e-5 kg/L.
    payload = bytes.fromhex("030100" "00000000080000" "0000" "54b011")
    result = decode(payload, CTX)[0]
    assert isinstance(result, Observation)
    assert result.measured_at is None


def test_glucose_special_value_has_no_number() -> None:
    payload = bytes.fromhex("020900e8070506081e00ff0711")
    expected = glucose(None, 160184, ("sample:capillary_whole_blood", FINGER), sequence=9,
                       at=datetime(2024, 5, 6, 6, 30, tzinfo=UTC),
                       absent=AbsentReason.NOT_A_NUMBER)
    assert decode(payload, CTX) == [expected]


def test_glucose_record_without_concentration_is_an_event() -> None:
    # Constructed: flags 0x08 (status only), seq 12, status b3 strip insertion error.
    payload = bytes.fromhex("080c00e8070506081e000800")
    assert decode(payload, CTX) == [
        Event(type="glucose.no_result", occurred_at=datetime(2024, 5, 6, 6, 30, tzinfo=UTC),
              data={"sequence": 12, "flags": ["strip_insertion_error"]})]


def test_glucose_trailing_bytes_are_flagged_last() -> None:
    result = decode(JDRF_1 + b"\x00", CTX)[0]
    assert isinstance(result, Observation)
    assert result.flags[-1] == "trailing_bytes"


@pytest.mark.parametrize(
    ("hex_payload", "reason"),
    [
        ("", "payload is 0 bytes; a measurement needs at least 10"),
        # Nordic onInvalidDataReceived: the time offset is missing.
        ("1b0000e207041a0b091e1e00120501",
         "payload is 15 bytes but flags 0x1b (time offset, concentration and type, "
         "sensor status annunciation) need 17"),
        # Constructed: 9999-12-31 23:59 plus 60 minutes is past the calendar.
        ("0101000f270c1f173b003c00",
         "base time 9999-12-31T23:59:00 plus 60 minutes has no UTC form"),
    ],
)
def test_glucose_rejects_with_one_line_reason(hex_payload: str, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(bytes.fromhex(hex_payload), CTX)
    assert (caught.value.channel, caught.value.reason) == ("ble/2a18", reason)


def test_glucose_every_prefix_of_nordic_is_rejected() -> None:
    for size in range(len(NORDIC)):
        with pytest.raises(DecodeError):
            decode(NORDIC[:size], CTX)


def test_glucose_json_carries_the_sequence() -> None:
    assert dumps(decode(JDRF_1, CTX)[0].to_json()) == (
        '{"kind":"observation","code":"2339-0","mdc":160212,"value":84,"unit":"mg/dL",'
        '"measured_at":"2018-06-06T12:53:14Z","flags":["sample:interstitial_fluid",'
        '"site:finger","context_follows"],"absent_reason":null,"panel":null,'
        '"device_user":null,"sequence":1}'
    )
