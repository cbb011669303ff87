"""GATT Date Time (0x2A08): the 7-byte wall-clock stamp inside BLE health measurements.

Wire layout (PROTOCOLS.md §2.6, date_time.xml), little-endian:

    [0..1] year u16 (1582-9999, 0 = unknown)   [2] month u8 (1-12, 0 = unknown)
    [3] day u8 (1-31, 0 = unknown)   [4] hours u8 (0-23)   [5] minutes u8 (0-59)
    [6] seconds u8 (0-59)

The stamp is local time with no zone, so the hub's zone (DecodeContext.zone) places it.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, tzinfo

from adapters.errors import DecodeError
from adapters.model import DEFAULT_ZONE

DATE_TIME_LENGTH = 7
CHANNEL = "ble/2a08"

_YEARS = range(1582, 10000)


def read_date_time(
    data: bytes, offset: int, zone: tzinfo, channel: str = CHANNEL
) -> datetime | None:
    """Read a Date Time at ``offset`` as an aware UTC datetime; None when the date is unknown.

    Out-of-range fields are rejected even when the date is unknown: such a stamp is malformed,
    not merely incomplete. A partly known date (e.g. year 0 with month and day set, as in
    Nordic's BPM test) cannot be placed on the timeline and also gives None (trap 7: never
    0000 or 1970). Wall-clock times that fall in a DST gap or overlap resolve with fold=0,
    i.e. with the offset in force before the transition.
    """
    end = offset + DATE_TIME_LENGTH
    if offset < 0 or end > len(data):
        raise DecodeError(
            channel,
            f"date time at offset {offset} needs {DATE_TIME_LENGTH} bytes; payload has {len(data)}",
        )
    year = int.from_bytes(data[offset : offset + 2], "little")
    month, day, hours, minutes, seconds = data[offset + 2 : end]
    if year and year not in _YEARS:
        raise DecodeError(channel, f"date time year {year} outside 1582-9999")
    fields = (
        ("month", month, 12),
        ("day", day, 31),
        ("hours", hours, 23),
        ("minutes", minutes, 59),
        ("seconds", seconds, 59),
    )
    for name, number, top in fields:
        if number > top:
            raise DecodeError(channel, f"date time {name} {number} outside 0-{top}")
    if not (year and month and day):
        return None
    last_day = calendar.monthrange(year, month)[1]
    if day > last_day:
        raise DecodeError(channel, f"date time day {day} outside 1-{last_day} in {year}-{month:02}")
    local = datetime(year, month, day, hours, minutes, seconds, tzinfo=zone, fold=0)
    try:
        return local.astimezone(UTC)
    except OverflowError:
        # 9999-12-31 late evening west of Greenwich is past datetime.max in UTC.
        raise DecodeError(channel, f"date time {local.isoformat()} has no UTC form") from None


def encode_date_time(moment: datetime | None, zone: tzinfo = DEFAULT_ZONE) -> bytes:
    """Encode an aware datetime as the device's wall clock in ``zone``; None -> all unknown.

    Sub-second parts are dropped, as the wire format has none. Naive datetimes are refused,
    since the zone of a device time must be known (see ``adapters.model.utc``).
    """
    if moment is None:
        return bytes(DATE_TIME_LENGTH)
    if moment.utcoffset() is None:
        raise ValueError("naive datetime: give the zone so the wall clock can be computed")
    local = moment.astimezone(zone)
    if local.year not in _YEARS:
        raise ValueError(f"year {local.year} outside the Date Time range 1582-9999")
    return local.year.to_bytes(2, "little") + bytes(
        (local.month, local.day, local.hour, local.minute, local.second)
    )
