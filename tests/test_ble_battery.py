"""Battery Level (0x2A19): Nordic BatteryLevelDataCallbackTest vectors."""

from __future__ import annotations

import pytest

from adapters.ble_battery import decode
from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event, dumps

CTX = DecodeContext()


@pytest.mark.parametrize(
    ("hex_payload", "level"),
    [("64", 100), ("0f", 15), ("00", 0)],  # Nordic fullBattery, lowBattery; constructed empty
)
def test_battery_level_is_a_device_event(hex_payload: str, level: int) -> None:
    assert decode(bytes.fromhex(hex_payload), CTX) == [
        Event(type="device.battery", occurred_at=None, data={"level": level})]


@pytest.mark.parametrize(
    ("hex_payload", "reason"),
    [
        # Nordic onInvalidDataReceived_batteryLevelOutOfRange.
        ("65", "battery level 101 outside 0-100 (101-255 are reserved)"),
        ("ff", "battery level 255 outside 0-100 (101-255 are reserved)"),
        # Nordic onInvalidDataReceived_dataTooLong.
        ("6400", "payload is 2 bytes; a battery level is 1"),
        ("", "payload is 0 bytes; a battery level is 1"),
    ],
)
def test_battery_rejects_with_one_line_reason(hex_payload: str, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(bytes.fromhex(hex_payload), CTX)
    assert (caught.value.channel, caught.value.reason) == ("ble/2a19", reason)


def test_battery_json() -> None:
    assert dumps(decode(b"\x64", CTX)[0].to_json()) == (
        '{"kind":"event","type":"device.battery","occurred_at":null,"data":{"level":100}}'
    )
