"""Weight Measurement (0x2A9D): RonanB96 uint vectors, SpeziBluetooth resolutions, traps 4-5."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from adapters.ble_weight import decode
from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event, Observation, Unit, dumps

CTX = DecodeContext(zone=ZoneInfo("Europe/Stockholm"))
WEIGHT = ("29463-7", 188736)
BMI = ("39156-5", 188752)
HEIGHT = ("8302-2", 188740)
# 2023-12-25 14:30:45 in Stockholm (CET) is 13:30:45 UTC.
CHRISTMAS = datetime(2023, 12, 25, 13, 30, 45, tzinfo=UTC)

# RonanB96/bluetooth-sig-python tests/gatt/characteristics/test_weight_measurement.py, test 6:
# flags 0x1f (imperial, time stamp, user id, BMI and height; b4 is RFU and ignored), 157.00 lb,
# 2023-12-25 14:30:45, user 3, BMI 24.5, height 68.0 in.
RONAN_FULL = bytes.fromhex("1f543de7070c190e1e2d03f500a802")


def obs(
    codes: tuple[str, int],
    value: str,
    unit: Unit,
    *,
    at: datetime | None = None,
    flags: tuple[str, ...] = (),
    user: int | None = None,
) -> Observation:
    """An expected observation."""
    return Observation(code=codes[0], mdc=codes[1], value=Decimal(value), unit=unit,
                       measured_at=at, flags=flags, device_user=user)


def assert_same(actual: Sequence[Observation | Event],
                expected: Sequence[Observation | Event]) -> None:
    """Equal, and every value written with the same digits (70.000 kg is not 70)."""
    assert actual == expected
    digits = [str(r.value) for r in actual if isinstance(r, Observation)]
    assert digits == [str(r.value) for r in expected if isinstance(r, Observation)]


@pytest.mark.parametrize(
    ("hex_payload", "expected"),
    [
        # RonanB96 test 1: 14000 x 0.005 kg.
        ("00b036", [obs(WEIGHT, "70.000", Unit.KG)]),
        # RonanB96 test 2: 15700 x 0.01 lb.
        ("01543d", [obs(WEIGHT, "157.00", Unit.LB)]),
        # RonanB96 test 3: with time stamp.
        ("02b036e7070c190e1e2d", [obs(WEIGHT, "70.000", Unit.KG, at=CHRISTMAS)]),
        # RonanB96 test 6.
        (
            RONAN_FULL.hex(),
            [
                obs(WEIGHT, "157.00", Unit.LB, at=CHRISTMAS, user=3),
                obs(BMI, "24.5", Unit.KG_PER_M2, at=CHRISTMAS, user=3),
                obs(HEIGHT, "68.0", Unit.IN, at=CHRISTMAS, user=3),
            ],
        ),
    ],
)
def test_weight_ronanb96_vectors(hex_payload: str, expected: list[Observation | Event]) -> None:
    assert_same(decode(bytes.fromhex(hex_payload), CTX), expected)


def test_weight_ronanb96_bmi_without_height_is_rejected_spec_wins() -> None:
    # RonanB96 test 4 sends flags 0x0c with BMI only; the spec's b3 is BMI *and* height.
    with pytest.raises(DecodeError) as caught:
        decode(bytes.fromhex("0cb03605f500"), CTX)
    assert caught.value.reason == (
        "payload is 6 bytes but flags 0x0c (user id, BMI and height, SI) need 8"
    )


def test_weight_ronanb96_b4_height_is_rfu_spec_wins() -> None:
    # RonanB96 test 5 reads b4 as "height present"; the spec says RFU, so the two bytes after
    # the weight are trailing bytes: kept out and flagged.
    expected = [obs(WEIGHT, "70.000", Unit.KG, flags=("trailing_bytes",))]
    assert_same(decode(bytes.fromhex("10b036d606"), CTX), expected)


@pytest.mark.parametrize(
    ("hex_payload", "expected"),
    [
        # SpeziBluetooth WeightScaleTests: raw 120 is 0.6 kg / 1.2 lb at every feature
        # resolution (trap 4); Spezi's weight(of:) gives 2.4 kg for resolution20g.
        ("007800", [obs(WEIGHT, "0.600", Unit.KG, flags=("implausible",))]),
        ("017800", [obs(WEIGHT, "1.20", Unit.LB, flags=("implausible",))]),
        # Spezi heights: 1700 x 0.001 m and 60 x 0.1 in; BMI 23.0.
        (
            "083036e600a406",
            [obs(WEIGHT, "69.360", Unit.KG), obs(BMI, "23.0", Unit.KG_PER_M2),
             obs(HEIGHT, "1.700", Unit.M)],
        ),
        (
            "096c3de6003c00",
            [obs(WEIGHT, "157.24", Unit.LB), obs(BMI, "23.0", Unit.KG_PER_M2),
             obs(HEIGHT, "6.0", Unit.IN, flags=("implausible",))],
        ),
        # Constructed: the smallest step is exactly 0.005 kg.
        ("000100", [obs(WEIGHT, "0.005", Unit.KG, flags=("implausible",))]),
    ],
)
def test_weight_fixed_resolution_trap_4(hex_payload: str, expected: list[Observation]) -> None:
    assert_same(decode(bytes.fromhex(hex_payload), CTX), expected)


@pytest.mark.parametrize(
    ("hex_payload", "flags"),
    [
        # Constructed. Weight: 2 kg is the lower bound (400 x 0.005), 1.995 kg is below; in
        # pounds 4.41 lb = 2.0004 kg, 4.40 lb = 1.9958 kg. (400 kg is beyond the u16 range.)
        ("009001", [()]),
        ("008f01", [("implausible",)]),
        ("01b901", [()]),
        ("01b801", [("implausible",)]),
        # BMI 8.0 and 90.0 plausible, 7.9 and 90.1 not; height 0.400 and 2.500 m plausible,
        # 0.399 and 2.501 m not (weight 70 kg throughout).
        ("08b03650009001", [(), (), ()]),
        ("08b0364f008f01", [(), ("implausible",), ("implausible",)]),
        ("08b0368403c409", [(), (), ()]),
        ("08b0368503c509", [(), ("implausible",), ("implausible",)]),
    ],
)
def test_weight_plausibility_bounds_are_inclusive(
    hex_payload: str, flags: list[tuple[str, ...]]
) -> None:
    result = decode(bytes.fromhex(hex_payload), CTX)
    assert [r.flags for r in result if isinstance(r, Observation)] == flags


def test_weight_unsuccessful_is_an_event_trap_5() -> None:
    # Constructed: flags 0x06 (time stamp, user id), weight 0xFFFF, Nordic "today", user 2.
    payload = bytes.fromhex("06ffffe20704110f330002")
    expected = Event(
        type="scale.measurement_unsuccessful",
        occurred_at=datetime(2018, 4, 17, 13, 51, tzinfo=UTC),
        data={"measurement": "weight", "user": 2, "flags": []},
    )
    assert decode(payload, CTX) == [expected]


def test_weight_unsuccessful_with_bmi_is_rejected_trap_5() -> None:
    with pytest.raises(DecodeError) as caught:
        decode(bytes.fromhex("08ffffe600a406"), CTX)
    assert caught.value.reason == (
        "weight 0xFFFF (measurement unsuccessful) but flags 0x08 announce BMI and height; "
        "only time stamp and user id may follow"
    )


def test_weight_user_255_is_unknown() -> None:
    assert_same(decode(bytes.fromhex("04b036ff"), CTX), [obs(WEIGHT, "70.000", Unit.KG)])


@pytest.mark.parametrize(
    ("hex_payload", "reason"),
    [
        ("", "payload is 0 bytes; a measurement needs at least 3"),
        # RonanB96 test_weight_measurement_invalid_data: two bytes.
        ("0001", "payload is 2 bytes; a measurement needs at least 3"),
        ("1fb036", "payload is 3 bytes but flags 0x1f "
                   "(time stamp, user id, BMI and height, imperial) need 15"),
        ("02b036e7070d190e1e2d", "date time month 13 outside 0-12"),
    ],
)
def test_weight_rejects_with_one_line_reason(hex_payload: str, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(bytes.fromhex(hex_payload), CTX)
    assert (caught.value.channel, caught.value.reason) == ("ble/2a9d", reason)


def test_weight_every_prefix_of_the_full_vector_is_rejected() -> None:
    for size in range(len(RONAN_FULL)):
        with pytest.raises(DecodeError):
            decode(RONAN_FULL[:size], CTX)


def test_weight_json_keeps_the_resolution_digits() -> None:
    assert dumps(decode(bytes.fromhex("00b036"), CTX)[0].to_json()) == (
        '{"kind":"observation","code":"29463-7","mdc":188736,"value":70.000,"unit":"kg",'
        '"measured_at":null,"flags":[],"absent_reason":null,"panel":null,"device_user":null,'
        '"sequence":null}'
    )
