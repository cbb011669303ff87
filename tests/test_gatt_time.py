"""GATT Date Time (0x2A08): unknown dates, range checks and local-to-UTC conversion."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from adapters.errors import DecodeError
from adapters.gatt_time import encode_date_time, read_date_time

STOCKHOLM = ZoneInfo("Europe/Stockholm")


def test_date_time_nordic_today_in_stockholm_summer() -> None:
    # Nordic DateTimeDataCallbackTest.onDateTimeReceived_today: 2018-04-17 15:51:00 local,
    # which is CEST (+02:00) in Stockholm.
    data = bytes.fromhex("e20704110f3300")
    assert read_date_time(data, 0, STOCKHOLM) == datetime(2018, 4, 17, 13, 51, 0, tzinfo=UTC)


def test_date_time_nordic_thermometer_stamp_in_winter_at_offset() -> None:
    # Nordic HealthThermometer vector (PROTOCOLS.md §2.5) from byte 5: 2012-12-05 11:50:27 CET.
    data = bytes.fromhex("06b00e00fedc070c050b321b04")
    assert read_date_time(data, 5, STOCKHOLM) == datetime(2012, 12, 5, 10, 50, 27, tzinfo=UTC)


def test_date_time_in_utc_zone_is_unchanged() -> None:
    data = bytes.fromhex("e20704110f3300")
    moment = read_date_time(data, 0, ZoneInfo("UTC"))
    assert moment == datetime(2018, 4, 17, 15, 51, 0, tzinfo=UTC)
    assert moment is not None
    assert moment.tzinfo is UTC


@pytest.mark.parametrize(
    "hex_stamp",
    [
        "00000000121a20",  # Nordic onDateTimeReceived_dateNotKnown: date unknown, 18:26:32
        "0000041114293b",  # Nordic BPM _full test: year 0, April 17, 20:41:59
        "e2070011000000",  # constructed: month unknown
        "e2070400000000",  # constructed: day unknown
        "00000000000000",  # constructed: all zero, what encode_date_time(None) sends
    ],
)
def test_date_time_unknown_date_is_none_never_epoch(hex_stamp: str) -> None:
    # Trap 7: year/month/day 0 mean "unknown"; never 0000-00-00 or 1970.
    assert read_date_time(bytes.fromhex(hex_stamp), 0, STOCKHOLM) is None


def test_date_time_dst_overlap_takes_first_occurrence() -> None:
    # Constructed: 2024-10-27 02:30 happens twice in Stockholm; fold=0 is the CEST one.
    data = bytes.fromhex("e8070a1b021e00")
    assert read_date_time(data, 0, STOCKHOLM) == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)


def test_date_time_dst_gap_uses_offset_before_transition() -> None:
    # Constructed: 2024-03-31 02:30 does not exist in Stockholm; fold=0 reads it as CET.
    data = bytes.fromhex("e807031f021e00")
    assert read_date_time(data, 0, STOCKHOLM) == datetime(2024, 3, 31, 1, 30, tzinfo=UTC)


def test_date_time_leap_day_and_range_ends_are_accepted() -> None:
    # Constructed: 2024-02-29, and the first and last representable years.
    assert read_date_time(bytes.fromhex("e807021d000000"), 0, ZoneInfo("UTC")) == datetime(
        2024, 2, 29, tzinfo=UTC
    )
    assert read_date_time(bytes.fromhex("2e060101000000"), 0, ZoneInfo("UTC")) == datetime(
        1582, 1, 1, tzinfo=UTC
    )
    assert read_date_time(bytes.fromhex("0f270c1f173b3b"), 0, ZoneInfo("UTC")) == datetime(
        9999, 12, 31, 23, 59, 59, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("hex_stamp", "reason"),
    [
        ("2d060101000000", "date time year 1581 outside 1582-9999"),
        ("10270101000000", "date time year 10000 outside 1582-9999"),
        ("e2070d01000000", "date time month 13 outside 0-12"),
        ("e2070420000000", "date time day 32 outside 0-31"),
        ("e707021d000000", "date time day 29 outside 1-28 in 2023-02"),
        ("e207041f000000", "date time day 31 outside 1-30 in 2018-04"),
        ("e2070411180000", "date time hours 24 outside 0-23"),
        ("e20704110f3c00", "date time minutes 60 outside 0-59"),
        ("e20704110f333c", "date time seconds 60 outside 0-59"),
        # Malformed even though the date is unknown: the stamp is broken, not incomplete.
        ("00000000ff0000", "date time hours 255 outside 0-23"),
    ],
)
def test_date_time_rejects_out_of_range_fields(hex_stamp: str, reason: str) -> None:
    # All constructed from date_time.xml ranges (PROTOCOLS.md §2.6).
    with pytest.raises(DecodeError) as caught:
        read_date_time(bytes.fromhex(hex_stamp), 0, STOCKHOLM, "ble/2a35")
    assert (caught.value.channel, caught.value.reason) == ("ble/2a35", reason)


@pytest.mark.parametrize(("hex_data", "offset"), [("e20704110f33", 0), ("00e20704110f33", 1)])
def test_date_time_rejects_truncation(hex_data: str, offset: int) -> None:
    # Nordic onInvalidDataReceived_dataTooShort: six bytes are not a Date Time.
    with pytest.raises(DecodeError) as caught:
        read_date_time(bytes.fromhex(hex_data), offset, STOCKHOLM)
    assert str(caught.value) == (
        f"ble/2a08: date time at offset {offset} needs 7 bytes; payload has {offset + 6}"
    )


def test_date_time_past_utc_range_is_a_decode_error() -> None:
    # Constructed: 9999-12-31 23:00 in New York is year 10000 in UTC, beyond datetime.max.
    with pytest.raises(DecodeError) as caught:
        read_date_time(bytes.fromhex("0f270c1f170000"), 0, ZoneInfo("America/New_York"))
    assert caught.value.reason == "date time 9999-12-31T23:00:00-05:00 has no UTC form"


def test_encode_date_time_writes_stockholm_wall_clock() -> None:
    # Inverse of the Nordic "today" vector: 13:51 UTC is 15:51 CEST.
    moment = datetime(2018, 4, 17, 13, 51, 0, 999_999, tzinfo=UTC)
    assert encode_date_time(moment).hex() == "e20704110f3300"


def test_encode_date_time_round_trips_in_given_zone() -> None:
    zone = ZoneInfo("America/New_York")
    moment = datetime(2012, 12, 5, 11, 50, 27, tzinfo=zone)
    encoded = encode_date_time(moment, zone)
    assert encoded.hex() == "dc070c050b321b"
    assert read_date_time(encoded, 0, zone) == moment.astimezone(UTC)


def test_encode_date_time_none_is_all_unknown() -> None:
    assert encode_date_time(None) == bytes(7)


def test_encode_date_time_refuses_naive_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        encode_date_time(datetime(2018, 4, 17, 15, 51))
    with pytest.raises(ValueError, match="year 1000 outside the Date Time range 1582-9999"):
        encode_date_time(datetime(1000, 1, 1, 12, tzinfo=UTC))
