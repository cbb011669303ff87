"""Generic device status from a hub or a device (our JSON document, channel ``status``).

Document v1 (docs/DEVICE_DOCUMENTS.md), becoming one ``device.status`` event:

    {"v": 1, "type": "device_status", "at": RFC 3339 with offset, "seq": int?,
     "battery_percent": 0-100?, "rssi_dbm": -150..20?, "firmware": text?,
     "uptime_s": int?, "clock": {"synced": bool, "source": "ntp" | ...?}?}

At least one status field must be present; a status saying nothing is a fault, not a
heartbeat (MQTT keep-alive already tells us the client lives). The event data holds exactly
the fields sent, plus ``clock_skew_s`` when the context knows when the message was received:
``at`` minus that moment, in whole seconds, so a device clock that drifts (and with it every
measurement time the device stamps) shows up before its readings become suspect.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from adapters import documents
from adapters.documents import Count, Document, Part, Percent, RecordNumber, ShortText, Timestamp
from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event

CHANNEL = "status"

STATUS_FIELDS = ("battery_percent", "rssi_dbm", "firmware", "uptime_s", "clock")


class Clock(Part):
    """How the device keeps its time."""

    synced: bool
    source: Literal["ntp", "gnss", "cellular", "ble", "manual", "none"] | None = None


class StatusDocument(Document):
    """Status document v1."""

    v: Literal[1]
    type: Literal["device_status"]
    at: Timestamp
    seq: RecordNumber | None = None
    battery_percent: Percent | None = None
    # Received signal strength; BLE and cellular report roughly -120..0 dBm.
    rssi_dbm: Annotated[int, Field(ge=-150, le=20)] | None = None
    firmware: ShortText | None = None
    uptime_s: Count | None = None
    clock: Clock | None = None


def decode(payload: bytes, ctx: DecodeContext) -> list[Event]:
    """Decode one status document into a ``device.status`` event."""
    doc = documents.parse(CHANNEL, payload, StatusDocument)
    data: dict[str, Any] = {}
    for name in STATUS_FIELDS:
        value = getattr(doc, name)
        if isinstance(value, Clock):
            data[name] = value.model_dump(exclude_none=True, exclude=set(value.model_extra or {}))
        elif value is not None:
            data[name] = value
    if not data:
        raise DecodeError(CHANNEL, f"no status field: send one of {', '.join(STATUS_FIELDS)}")
    received = ctx.received_at
    if received is not None and received.utcoffset() is not None:
        data["clock_skew_s"] = round((doc.at - received).total_seconds())
    data.update(documents.envelope_data(doc))
    return [Event(type="device.status", occurred_at=doc.at, data=data)]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of status document v1."""
    schema = documents.json_schema(CHANNEL, StatusDocument, ())
    schema["anyOf"] = [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
        for name in STATUS_FIELDS
    ]
    return schema
