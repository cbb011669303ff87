"""Date Time (GATT 0x2A08) read from a device -> one ``device.clock`` event.

Wire layout (PROTOCOLS.md §2.6, date_time.xml), exactly 7 bytes, little-endian:

    [0..1] year u16 (1582-9999, 0 = unknown)   [2] month u8 (1-12, 0 = unknown)
    [3] day u8 (1-31, 0 = unknown)   [4] hours u8 (0-23)   [5] minutes u8   [6] seconds u8

The value is the device's own clock: local wall-clock time with no zone. The event carries it
as ``device_time``, an ISO 8601 string without zone ("2018-04-17T15:51:00"), or None when the
date is unknown (trap 7: never 0000-00-00 or 1970). occurred_at is None: the gateway compares
``device_time`` with its receive time, in the hub's zone, to estimate the clock offset.

Deliberate choice: only exactly 7 bytes are accepted (blevalueparser rejects 8, Nordic rejects
6); out-of-range fields are rejected even when the date is unknown, as in
``adapters.gatt_time.read_date_time``.
"""

from __future__ import annotations

from datetime import UTC

from adapters.errors import DecodeError
from adapters.gatt_time import CHANNEL, DATE_TIME_LENGTH, read_date_time
from adapters.model import DecodeContext, Event

EVENT_TYPE = "device.clock"

__all__ = ["CHANNEL", "EVENT_TYPE", "decode"]


def decode(payload: bytes, ctx: DecodeContext) -> list[Event]:
    """Decode one 0x2A08 value into a ``device.clock`` event."""
    if len(payload) != DATE_TIME_LENGTH:
        raise DecodeError(CHANNEL, f"payload is {len(payload)} bytes; a date time is 7")
    # UTC as a neutral zone: the fields come back unchanged, validated, as a wall clock.
    wall = read_date_time(payload, 0, UTC, CHANNEL)
    device_time = None if wall is None else wall.replace(tzinfo=None).isoformat()
    return [Event(type=EVENT_TYPE, occurred_at=None, data={"device_time": device_time})]
