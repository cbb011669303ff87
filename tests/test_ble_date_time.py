"""Date Time (0x2A08) as the device's clock: Nordic DateTimeDataCallbackTest vectors."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from adapters.ble_date_time import decode
from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event, dumps

CTX = DecodeContext(zone=ZoneInfo("America/New_York"))


def clock(device_time: str | None) -> list[Event]:
    """The expected ``device.clock`` event."""
    return [Event(type="device.clock", occurred_at=None, data={"device_time": device_time})]


@pytest.mark.parametrize(
    ("hex_payload", "device_time"),
    [
        # Nordic onDateTimeReceived_today: the wall clock as sent, whatever the hub's zone.
        ("e20704110f3300", "2018-04-17T15:51:00"),
        # Nordic onDateTimeReceived_dateNotKnown: time known, date unknown -> null (trap 7).
        ("00000000121a20", None),
        # Constructed: a wall-clock time that does not exist in New York (DST gap) is still
        # reported as the device shows it; the year-9999 evening that overflows UTC too.
        ("e807030a021e00", "2024-03-10T02:30:00"),
        ("0f270c1f173b3b", "9999-12-31T23:59:59"),
    ],
)
def test_date_time_reports_the_device_wall_clock(hex_payload: str, device_time: str | None) -> None:
    assert decode(bytes.fromhex(hex_payload), CTX) == clock(device_time)


@pytest.mark.parametrize(
    ("hex_payload", "reason"),
    [
        # Nordic onInvalidDataReceived_dataTooShort and _dataTooLong (which sends nothing).
        ("e20704110f33", "payload is 6 bytes; a date time is 7"),
        ("", "payload is 0 bytes; a date time is 7"),
        # blevalueparser datetimetest rejects 8 bytes too.
        ("e20704110f330000", "payload is 8 bytes; a date time is 7"),
        ("e207041f0f3300", "date time day 31 outside 1-30 in 2018-04"),
        ("e2070411180000", "date time hours 24 outside 0-23"),
    ],
)
def test_date_time_rejects_with_one_line_reason(hex_payload: str, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(bytes.fromhex(hex_payload), CTX)
    assert (caught.value.channel, caught.value.reason) == ("ble/2a08", reason)


def test_date_time_json() -> None:
    assert dumps(decode(bytes.fromhex("e20704110f3300"), CTX)[0].to_json()) == (
        '{"kind":"event","type":"device.clock","occurred_at":null,'
        '"data":{"device_time":"2018-04-17T15:51:00"}}'
    )
