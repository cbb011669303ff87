"""Battery Level (GATT 0x2A19) -> one ``device.battery`` event.

Wire layout (PROTOCOLS.md §2.7, battery_level.xml): exactly one byte, u8, the remaining charge in
percent, 0-100; 101-255 are reserved. The level describes the device, not the person, so it is
an event with data ``{"level": n}``, never an observation.

Deliberate choice: anything but exactly one byte in 0-100 is rejected, as Nordic's
BatteryLevelDataCallback does (its tests reject 0x65 and a two-byte value). The characteristic
has no time stamp, so occurred_at is None and the gateway uses its receive time.
"""

from __future__ import annotations

from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event

CHANNEL = "ble/2a19"
EVENT_TYPE = "device.battery"

_LENGTH = 1
_MAX_LEVEL = 100


def decode(payload: bytes, ctx: DecodeContext) -> list[Event]:
    """Decode one 0x2A19 value into a ``device.battery`` event."""
    if len(payload) != _LENGTH:
        raise DecodeError(CHANNEL, f"payload is {len(payload)} bytes; a battery level is 1")
    level = payload[0]
    if level > _MAX_LEVEL:
        raise DecodeError(CHANNEL, f"battery level {level} outside 0-100 (101-255 are reserved)")
    return [Event(type=EVENT_TYPE, occurred_at=None, data={"level": level})]
