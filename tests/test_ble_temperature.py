"""Temperature Measurement (0x2A1C): the Nordic vector, FLOAT precision, units and sites."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from adapters.ble_temperature import decode
from adapters.errors import DecodeError
from adapters.model import AbsentReason, DecodeContext, Observation, Unit, dumps

CTX = DecodeContext(zone=ZoneInfo("Europe/Stockholm"))

# Nordic Android-BLE-Common-Library TemperatureMeasurementDataCallbackTest (PROTOCOLS.md §2.5):
# flags 0x06 (time stamp, type), FLOAT 0xFE000EB0 = 3760e-2 = 37.60 °C, 2012-12-05 11:50:27
# (CET, so 10:50:27 UTC), type 4 finger.
NORDIC = bytes.fromhex("06b00e00fedc070c050b321b04")


def temperature(value: str | None, unit: Unit = Unit.CEL, *, flags: tuple[str, ...] = (),
                at: datetime | None = None, absent: AbsentReason | None = None) -> Observation:
    """An expected body temperature observation."""
    return Observation(code="8310-5", mdc=150364, value=None if value is None else Decimal(value),
                       unit=unit, measured_at=at, flags=flags, absent_reason=absent)


def test_temperature_nordic_vector_keeps_its_two_decimals() -> None:
    result = decode(NORDIC, CTX)
    assert result == [temperature("37.60", flags=("site:finger",),
                                  at=datetime(2012, 12, 5, 10, 50, 27, tzinfo=UTC))]
    assert str(result[0].value) == "37.60"


def test_temperature_fahrenheit() -> None:
    # Constructed: flags 0x01, FLOAT 0xFF0003DA = 986e-1 = 98.6 °F.
    assert decode(bytes.fromhex("01da0300ff"), CTX) == [temperature("98.6", Unit.DEGF)]


@pytest.mark.parametrize(
    ("site", "flag"),
    [(1, "site:armpit"), (2, "site:body"), (3, "site:ear"), (5, "site:gastrointestinal_tract"),
     (6, "site:mouth"), (7, "site:rectum"), (8, "site:toe"), (9, "site:tympanum")],
)
def test_temperature_type_becomes_a_site_flag(site: int, flag: str) -> None:
    payload = bytes.fromhex("04b00e00fe") + bytes([site])
    assert decode(payload, CTX)[0].flags == (flag,)


@pytest.mark.parametrize("site", [0, 10, 255])
def test_temperature_reserved_type_adds_no_flag(site: int) -> None:
    assert decode(bytes.fromhex("04b00e00fe") + bytes([site]), CTX)[0].flags == ()


@pytest.mark.parametrize(
    ("float_hex", "absent"),
    [("ffff7f00", AbsentReason.NOT_A_NUMBER), ("00008000", AbsentReason.ERROR),
     ("feff7f00", AbsentReason.POSITIVE_INFINITY), ("02008000", AbsentReason.NEGATIVE_INFINITY)],
)
def test_temperature_special_values_have_no_number(float_hex: str, absent: AbsentReason) -> None:
    assert decode(bytes.fromhex("00" + float_hex), CTX) == [temperature(None, absent=absent)]


@pytest.mark.parametrize(
    ("hex_payload", "flags"),
    [
        ("00fa0000ff", ()),  # 25.0 °C: lower bound
        ("00f90000ff", ("implausible",)),  # 24.9 °C
        ("00c20100ff", ()),  # 45.0 °C
        ("00c30100ff", ("implausible",)),  # 45.1 °C
        ("01710400ff", ("implausible",)),  # 113.7 °F = 45.4 °C
        ("01490300ff", ()),  # 84.1 °F = 28.9 °C
    ],
)
def test_temperature_plausibility_in_celsius(hex_payload: str, flags: tuple[str, ...]) -> None:
    assert decode(bytes.fromhex(hex_payload), CTX)[0].flags == flags


def test_temperature_trailing_bytes_are_flagged() -> None:
    result = decode(NORDIC + b"\x00", CTX)
    assert result[0].flags == ("site:finger", "trailing_bytes")


@pytest.mark.parametrize(
    ("hex_payload", "reason"),
    [
        ("", "payload is 0 bytes; a measurement needs at least 5"),
        # Nordic onInvalidDataReceived: the type byte is missing.
        ("06b00e00fedc070c050b321b",
         "payload is 12 bytes but flags 0x06 (time stamp, temperature type, Celsius) need 13"),
        ("02b00e00fedc070c200b321b", "date time day 32 outside 0-31"),
    ],
)
def test_temperature_rejects_with_one_line_reason(hex_payload: str, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(bytes.fromhex(hex_payload), CTX)
    assert (caught.value.channel, caught.value.reason) == ("ble/2a1c", reason)


def test_temperature_every_prefix_of_nordic_is_rejected() -> None:
    for size in range(len(NORDIC)):
        with pytest.raises(DecodeError):
            decode(NORDIC[:size], CTX)


def test_temperature_json() -> None:
    assert dumps(decode(NORDIC, CTX)[0].to_json()) == (
        '{"kind":"observation","code":"8310-5","mdc":150364,"value":37.60,"unit":"Cel",'
        '"measured_at":"2012-12-05T10:50:27Z","flags":["site:finger"],"absent_reason":null,'
        '"panel":null,"device_user":null,"sequence":null}'
    )
