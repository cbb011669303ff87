"""Blood Pressure Measurement (0x2A35): Nordic test vectors and spec-constructed payloads."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from adapters.ble_bpm import decode
from adapters.errors import DecodeError
from adapters.model import AbsentReason, DecodeContext, Observation, Unit, dumps

CTX = DecodeContext(zone=ZoneInfo("Europe/Stockholm"))
PANEL = "85354-9"

# (LOINC, MDC) written out here rather than read from the catalogue, so a catalogue slip shows.
SYS = ("8480-6", 150021)
DIA = ("8462-4", 150022)
MEAN = ("8478-0", 150023)
PULSE = ("8867-4", 149546)

# Nordic Android-BLE-Common-Library BloodPressureMeasurementDataCallbackTest, _full:
# flags 0x1e (time stamp, pulse, user id, status; mmHg), 138/88/120, date with year 0,
# pulse 60, user 1, status 0b100111.
NORDIC_FULL = bytes.fromhex("1e8a00580078000000041114293b3c00012700")


def obs(
    codes: tuple[str, int],
    value: str | None,
    unit: Unit,
    *,
    flags: tuple[str, ...] = (),
    measured_at: datetime | None = None,
    absent: AbsentReason | None = None,
    device_user: int | None = None,
) -> Observation:
    """An expected observation; pressures get the BP panel, pulse rate does not."""
    return Observation(
        code=codes[0],
        mdc=codes[1],
        value=None if value is None else Decimal(value),
        unit=unit,
        measured_at=measured_at,
        flags=flags,
        absent_reason=absent,
        panel=None if codes == PULSE else PANEL,
        device_user=device_user,
    )


def assert_same(actual: list[Observation], expected: list[Observation]) -> None:
    """Equal, and every Decimal written with the same digits ("2.0" is not "2")."""
    assert actual == expected
    assert [str(o.value) for o in actual] == [str(o.value) for o in expected]


def test_bp_nordic_full_mmhg_with_unknown_year_pulse_user_and_status() -> None:
    status = ("body_movement", "cuff_too_loose", "irregular_pulse", "improper_measurement_position")
    # The stamp has year 0, so measured_at is None (trap 7); Nordic keeps month/day only.
    expected = [
        obs(SYS, "138", Unit.MMHG, flags=status, device_user=1),
        obs(DIA, "88", Unit.MMHG, flags=status, device_user=1),
        obs(MEAN, "120", Unit.MMHG, flags=status, device_user=1),
        obs(PULSE, "60", Unit.PER_MIN, flags=status, device_user=1),
    ]
    assert_same(decode(NORDIC_FULL, CTX), expected)


def test_bp_nordic_some_kpa_with_pulse_and_status() -> None:
    # Nordic _some: flags 0x15 (kPa, pulse, status), 18.9/11/15.9 kPa, pulse 60,
    # status 0b010010 = cuff too loose + pulse-rate range 2 (below lower limit).
    payload = bytes.fromhex("15bdf00b009ff03c001200")
    status = ("cuff_too_loose", "pulse_rate_below_range")
    expected = [
        obs(SYS, "18.9", Unit.KPA, flags=status),
        obs(DIA, "11", Unit.KPA, flags=status),
        obs(MEAN, "15.9", Unit.KPA, flags=status),
        obs(PULSE, "60", Unit.PER_MIN, flags=status),
    ]
    assert_same(decode(payload, CTX), expected)


def test_bp_nordic_minimal_mmhg_is_kept_but_implausible() -> None:
    # Nordic _minimal sends 18.9/11/15.9 with the unit flag at mmHg: below 20 mmHg, so
    # each value is kept and flagged rather than dropped.
    payload = bytes.fromhex("00bdf00b009ff0")
    expected = [
        obs(SYS, "18.9", Unit.MMHG, flags=("implausible",)),
        obs(DIA, "11", Unit.MMHG, flags=("implausible",)),
        obs(MEAN, "15.9", Unit.MMHG, flags=("implausible",)),
    ]
    assert_same(decode(payload, CTX), expected)


def test_bp_kpa_with_timestamp_and_pulse() -> None:
    # Constructed from §2.1: flags 0x07 (kPa, time stamp, pulse), Nordic's 18.9/11/15.9 kPa,
    # Nordic DateTime "today" stamp 2018-04-17 15:51:00 (CEST, so 13:51 UTC), pulse 72.
    payload = bytes.fromhex("07bdf00b009ff0e20704110f33004800")
    at = datetime(2018, 4, 17, 13, 51, tzinfo=UTC)
    expected = [
        obs(SYS, "18.9", Unit.KPA, measured_at=at),
        obs(DIA, "11", Unit.KPA, measured_at=at),
        obs(MEAN, "15.9", Unit.KPA, measured_at=at),
        obs(PULSE, "72", Unit.PER_MIN, measured_at=at),
    ]
    assert_same(decode(payload, CTX), expected)


def test_bp_timestamp_uses_context_zone() -> None:
    # Same stamp as above, read by a hub in New York (EDT, -04:00).
    payload = bytes.fromhex("02bdf00b009ff0e20704110f3300")
    at = datetime(2018, 4, 17, 19, 51, tzinfo=UTC)
    result = decode(payload, DecodeContext(zone=ZoneInfo("America/New_York")))
    assert [o.measured_at for o in result] == [at, at, at]


def test_bp_special_values_become_absent_reasons() -> None:
    # Constructed: flags 0x04; systolic NaN 0x07FF, diastolic NRes 0x0800, MAP +INF 0x07FE,
    # pulse -INF 0x0802 (PHD IG mapping). Never range-checked, never 2047 or 2046.
    payload = bytes.fromhex("04ff070008fe070208")
    expected = [
        obs(SYS, None, Unit.MMHG, absent=AbsentReason.NOT_A_NUMBER),
        obs(DIA, None, Unit.MMHG, absent=AbsentReason.ERROR),
        obs(MEAN, None, Unit.MMHG, absent=AbsentReason.POSITIVE_INFINITY),
        obs(PULSE, None, Unit.PER_MIN, absent=AbsentReason.NEGATIVE_INFINITY),
    ]
    assert_same(decode(payload, CTX), expected)


def test_bp_exponent_is_unbiased_trap_1() -> None:
    # Trap 1 (PROTOCOLS.md §0): 62 80 is 98e-8, not 98, and 48 80 is 72e-8, not 72, as
    # RonanB96/bluetooth-sig-python's biased parser would have it.
    payload = bytes.fromhex("0062804880c880")
    flags = ("implausible",)
    expected = [
        obs(SYS, "9.8E-7", Unit.MMHG, flags=flags),
        obs(DIA, "7.2E-7", Unit.MMHG, flags=flags),
        obs(MEAN, "0.00000200", Unit.MMHG, flags=flags),
    ]
    assert_same(decode(payload, CTX), expected)


def test_bp_precision_is_kept() -> None:
    # Constructed: kPa values 16.00 (0xE640), 10.0 (0xF064), 12.00 (0xE4B0): the
    # exponent travels into the Decimal (PHD IG FLOATS.md precision rule).
    payload = bytes.fromhex("0140e664f0b0e4")
    expected = [
        obs(SYS, "16.00", Unit.KPA),
        obs(DIA, "10.0", Unit.KPA),
        obs(MEAN, "12.00", Unit.KPA),
    ]
    assert_same(decode(payload, CTX), expected)


def test_bp_plausibility_bounds_are_inclusive_and_judged_in_mmhg() -> None:
    # Constructed. mmHg: 300 and 20 plausible, 301 not; pulse 19/min not, 300/min is.
    mmhg = decode(bytes.fromhex("042c0114002d011300"), CTX)
    assert [o.flags for o in mmhg] == [(), (), ("implausible",), ("implausible",)]
    mmhg = decode(bytes.fromhex("042c0114002d012c01"), CTX)
    assert [o.flags for o in mmhg] == [(), (), ("implausible",), ()]
    # kPa: 39.9 kPa = 299.3 mmHg plausible; 40.0 kPa = 300.02 mmHg not; 2.6 kPa = 19.5 mmHg not.
    kpa = decode(bytes.fromhex("018ff190f11af0"), CTX)
    assert [(str(o.value), o.flags) for o in kpa] == [
        ("39.9", ()),
        ("40.0", ("implausible",)),
        ("2.6", ("implausible",)),
    ]


@pytest.mark.parametrize(
    ("user_byte", "device_user"),
    [("07", 7), ("00", 0), ("fe", 254), ("ff", None)],
)
def test_bp_user_id_255_is_unknown(user_byte: str, device_user: int | None) -> None:
    # Constructed: flags 0x08 (user id), 120/80/93 mmHg.
    payload = bytes.fromhex("08780050005d00" + user_byte)
    expected = [
        obs(SYS, "120", Unit.MMHG, device_user=device_user),
        obs(DIA, "80", Unit.MMHG, device_user=device_user),
        obs(MEAN, "93", Unit.MMHG, device_user=device_user),
    ]
    assert_same(decode(payload, CTX), expected)


@pytest.mark.parametrize(
    ("status_hex", "flags"),
    [
        ("0000", ()),
        ("0800", ("pulse_rate_above_range",)),
        ("1000", ("pulse_rate_below_range",)),
        ("1800", ("pulse_rate_range_rfu",)),
        # b6-15 are RFU and ignored; b0-5 all set.
        (
            "ffff",
            (
                "body_movement",
                "cuff_too_loose",
                "irregular_pulse",
                "improper_measurement_position",
                "pulse_rate_range_rfu",
            ),
        ),
        ("c0ff", ()),
    ],
)
def test_bp_measurement_status_bits(status_hex: str, flags: tuple[str, ...]) -> None:
    # Constructed: flags 0xf0 (status; RFU flag bits b5-7 set and ignored), 120/80/93 mmHg.
    payload = bytes.fromhex("f0780050005d00" + status_hex)
    expected = [
        obs(SYS, "120", Unit.MMHG, flags=flags),
        obs(DIA, "80", Unit.MMHG, flags=flags),
        obs(MEAN, "93", Unit.MMHG, flags=flags),
    ]
    assert_same(decode(payload, CTX), expected)


def test_bp_trailing_bytes_are_tolerated_and_flagged() -> None:
    # Nordic _full plus one stray byte: decoded as Nordic does, but flagged for audit.
    status = ("body_movement", "cuff_too_loose", "irregular_pulse", "improper_measurement_position")
    flags = (*status, "trailing_bytes")
    expected = [
        obs(SYS, "138", Unit.MMHG, flags=flags, device_user=1),
        obs(DIA, "88", Unit.MMHG, flags=flags, device_user=1),
        obs(MEAN, "120", Unit.MMHG, flags=flags, device_user=1),
        obs(PULSE, "60", Unit.PER_MIN, flags=flags, device_user=1),
    ]
    assert_same(decode(NORDIC_FULL + b"\x00", CTX), expected)


@pytest.mark.parametrize(
    ("hex_payload", "reason"),
    [
        # Nordic onInvalidDataReceived_toShort.
        ("010203040506", "payload is 6 bytes; a measurement needs at least 7"),
        # Nordic onInvalidDataReceived_noTimestamp: kPa + time stamp flagged, 7 bytes sent.
        ("03020304050607", "payload is 7 bytes but flags 0x03 (time stamp, kPa) need 14"),
        ("", "payload is 0 bytes; a measurement needs at least 7"),
        # Constructed: every optional field flagged, Nordic _some body (11 bytes).
        (
            "1fbdf00b009ff03c001200",
            "payload is 11 bytes but flags 0x1f "
            "(time stamp, pulse rate, user id, measurement status, kPa) need 19",
        ),
        # Constructed: a valid length but month 13 in the time stamp.
        ("02780050006000e2070d11000000", "date time month 13 outside 0-12"),
    ],
)
def test_bp_rejects_with_one_line_reason(hex_payload: str, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(bytes.fromhex(hex_payload), CTX)
    assert (caught.value.channel, caught.value.reason) == ("ble/2a35", reason)


def test_bp_every_prefix_of_nordic_full_is_rejected() -> None:
    for size in range(len(NORDIC_FULL)):
        with pytest.raises(DecodeError) as caught:
            decode(NORDIC_FULL[:size], CTX)
        if size < 7:
            assert caught.value.reason == f"payload is {size} bytes; a measurement needs at least 7"
        else:
            assert caught.value.reason == (
                f"payload is {size} bytes but flags 0x1e "
                "(time stamp, pulse rate, user id, measurement status, mmHg) need 19"
            )


def test_bp_observation_dumps_keeps_decimal_digits() -> None:
    # Constructed: kPa systolic 16.00 (0xE640) with the Nordic "today" stamp; the JSON text
    # must say 16.00, not 16.0 or 16 (PHD IG precision rule).
    payload = bytes.fromhex("0340e664f0b0e4e20704110f3300")
    systolic = decode(payload, CTX)[0]
    assert dumps(systolic.to_json()) == (
        '{"kind":"observation","code":"8480-6","mdc":150021,"value":16.00,"unit":"kPa",'
        '"measured_at":"2018-04-17T13:51:00Z","flags":[],"absent_reason":null,'
        '"panel":"85354-9","device_user":null,"sequence":null}'
    )
