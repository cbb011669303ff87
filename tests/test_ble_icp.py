"""Intermediate Cuff Pressure (0x2A36): Nordic test vectors and spec-constructed payloads."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from adapters.ble_icp import decode
from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event, dumps

CTX = DecodeContext(zone=ZoneInfo("Europe/Stockholm"))
NORDIC_STATUS = ["body_movement", "cuff_too_loose", "irregular_pulse",
                 "improper_measurement_position"]

# Nordic Android-BLE-Common-Library IntermediateCuffPressureDataCallbackTest _full: flags 0x1e
# (time stamp with year 0, pulse, user id, status), cuff 4 mmHg, slots 2-3 zero, pulse 60,
# user 1, status 0b100111.
NORDIC_FULL = bytes.fromhex("1e0400000000000000041114293b3c00012700")


def cuff(
    pressure: str | None,
    unit: str = "mm[Hg]",
    *,
    at: datetime | None = None,
    pulse: str | None = None,
    flags: list[str] | None = None,
    user: int | None = None,
    absent: str | None = None,
) -> Event:
    """An expected ``bp.cuff_pressure`` event."""
    data: dict[str, Any] = {
        "pressure": None if pressure is None else Decimal(pressure),
        "unit": unit,
        "absent_reason": absent,
        "pulse_rate": None if pulse is None else Decimal(pulse),
        "flags": flags or [],
        "user": user,
    }
    return Event(type="bp.cuff_pressure", occurred_at=at, data=data)


def assert_same(actual: list[Event], expected: list[Event]) -> None:
    """Equal, and the pressure written with the same digits."""
    assert actual == expected
    assert [str(e.data["pressure"]) for e in actual] == [str(e.data["pressure"]) for e in expected]


def test_icp_nordic_full_is_an_event_never_an_observation() -> None:
    # Year 0 in the stamp: occurred_at None (trap 7).
    expected = [cuff("4", pulse="60", flags=NORDIC_STATUS, user=1)]
    assert_same(decode(NORDIC_FULL, CTX), expected)


def test_icp_nordic_some_kpa_with_pulse_and_status() -> None:
    # Nordic _some: flags 0x15 (kPa, pulse, status), cuff 11.1 kPa (0xF06F), pulse 60,
    # status 0b010010 = cuff too loose + pulse rate below range.
    payload = bytes.fromhex("156ff0000000003c001200")
    expected = [cuff("11.1", "kPa", pulse="60",
                     flags=["cuff_too_loose", "pulse_rate_below_range"])]
    assert_same(decode(payload, CTX), expected)


def test_icp_nordic_minimal() -> None:
    # Nordic _minimal: flags 0, 21.5 mmHg (0xF0D7).
    assert_same(decode(bytes.fromhex("00d7f000000000"), CTX), [cuff("21.5")])


@pytest.mark.parametrize("slots", ["ff07ff07", "00000000", "ff070000", "12345678"])
def test_icp_unused_slots_are_ignored_trap_8(slots: str) -> None:
    # Constructed: 120 mmHg; whatever the diastolic/MAP slots hold (NaN, zero, garbage).
    assert_same(decode(bytes.fromhex("007800" + slots), CTX), [cuff("120")])


def test_icp_time_stamp_becomes_occurred_at() -> None:
    # Constructed: flags 0x02, 120 mmHg, Nordic DateTime "today" 2018-04-17 15:51 CEST.
    payload = bytes.fromhex("02780000000000e20704110f3300")
    expected = [cuff("120", at=datetime(2018, 4, 17, 13, 51, tzinfo=UTC))]
    assert_same(decode(payload, CTX), expected)


def test_icp_special_values_have_no_number() -> None:
    # Constructed: flags 0x04; cuff NaN (0x07FF), pulse -INF (0x0802).
    payload = bytes.fromhex("04ff07000000000208")
    assert_same(decode(payload, CTX), [cuff(None, absent="not-a-number")])


@pytest.mark.parametrize(
    ("hex_payload", "flags"),
    [
        ("005e01ff07ff07", []),  # 350 mmHg: top of the plausible range
        ("005f01ff07ff07", ["implausible"]),  # 351 mmHg
        ("000000ff07ff07", []),  # 0 mmHg: a deflated cuff
        ("01d8f1ff07ff07", ["implausible"]),  # 47.2 kPa = 354 mmHg
    ],
)
def test_icp_plausibility_is_judged_in_mmhg(hex_payload: str, flags: list[str]) -> None:
    assert decode(bytes.fromhex(hex_payload), CTX)[0].data["flags"] == flags


def test_icp_user_255_is_unknown_and_trailing_bytes_are_flagged() -> None:
    payload = bytes.fromhex("087800ff07ff07ff") + b"\x00"
    assert_same(decode(payload, CTX), [cuff("120", flags=["trailing_bytes"])])


@pytest.mark.parametrize(
    ("hex_payload", "reason"),
    [
        # Nordic onInvalidDataReceived_toShort.
        ("010203040506", "payload is 6 bytes; a cuff pressure needs at least 7"),
        # Nordic onInvalidDataReceived_noTimestamp.
        ("03020304050607", "payload is 7 bytes but flags 0x03 (time stamp, kPa) need 14"),
        ("", "payload is 0 bytes; a cuff pressure needs at least 7"),
    ],
)
def test_icp_rejects_with_one_line_reason(hex_payload: str, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(bytes.fromhex(hex_payload), CTX)
    assert (caught.value.channel, caught.value.reason) == ("ble/2a36", reason)


def test_icp_every_prefix_of_nordic_full_is_rejected() -> None:
    for size in range(len(NORDIC_FULL)):
        with pytest.raises(DecodeError):
            decode(NORDIC_FULL[:size], CTX)


def test_icp_event_json() -> None:
    assert dumps(decode(bytes.fromhex("156ff0000000003c001200"), CTX)[0].to_json()) == (
        '{"kind":"event","type":"bp.cuff_pressure","occurred_at":null,"data":{"pressure":11.1,'
        '"unit":"kPa","absent_reason":null,"pulse_rate":60,'
        '"flags":["cuff_too_loose","pulse_rate_below_range"],"user":null}}'
    )
