"""Payload builders for the JSON documents we define (docs/DEVICE_DOCUMENTS.md, version 1).

Each builder returns the exact bytes a device or hub publishes: compact UTF-8 JSON with
the envelope first (``v``, ``type``, ``at``, ``seq``) and the body in documented order.
Numbers are Decimals written with their own digits, so 2.80 L stays "2.80" on the wire.
Fields left as None are omitted, as devices omit what they did not measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from adapters.model import dumps

VERSION = 1


def _at(moment: datetime) -> str:
    """RFC 3339 with the device's own offset; a naive time has no offset and is refused."""
    if moment.utcoffset() is None:
        raise ValueError("naive datetime: a document time needs its UTC offset")
    return moment.isoformat().replace("+00:00", "Z")


def _document(kind: str, at: datetime, seq: int | None, body: dict[str, Any]) -> bytes:
    doc: dict[str, Any] = {"v": VERSION, "type": kind, "at": _at(at)}
    if seq is not None:
        doc["seq"] = seq
    doc.update({name: value for name, value in body.items() if value is not None})
    return dumps(doc).encode()


def spirometry(
    at: datetime,
    *,
    kind: str = "spirometry",
    fev1: Decimal | None = None,
    fvc: Decimal | None = None,
    pef: Decimal | None = None,
    quality: str | None = None,
    manoeuvres: int | None = None,
    seq: int | None = None,
) -> bytes:
    """A spirometer or PEF meter session (``kind`` "spirometry" or "peak_flow")."""
    return _document(kind, at, seq, {
        "fev1": None if fev1 is None else {"value": fev1, "unit": "L"},
        "fvc": None if fvc is None else {"value": fvc, "unit": "L"},
        "pef": None if pef is None else {"value": pef, "unit": "L/min"},
        "quality": quality,
        "manoeuvres": manoeuvres,
    })


@dataclass(frozen=True, slots=True)
class Dose:
    """The dose a dispenser event is about."""

    id: str
    scheduled_at: datetime
    compartment: int | None = None


def dispenser_event(
    kind: str,
    at: datetime,
    *,
    dose: Dose | None = None,
    remaining_doses: int | None = None,
    confirmation: str | None = None,
    reason: str | None = None,
    credential: str | None = None,
    fault_code: str | None = None,
    battery_percent: int | None = None,
    seq: int | None = None,
) -> bytes:
    """A medication dispenser event (``kind`` as in the dispenser vocabulary)."""
    dose_doc: dict[str, Any] | None = None
    if dose is not None:
        dose_doc = {"id": dose.id, "scheduled_at": _at(dose.scheduled_at)}
        if dose.compartment is not None:
            dose_doc["compartment"] = dose.compartment
    return _document(kind, at, seq, {
        "dose": dose_doc,
        "remaining_doses": remaining_doses,
        "confirmation": confirmation,
        "reason": reason,
        "credential": credential,
        "fault_code": fault_code,
        "battery_percent": battery_percent,
    })


def lock_event(
    kind: str,
    at: datetime,
    *,
    method: str | None = None,
    credential: str | None = None,
    attempts: int | None = None,
    battery_percent: int | None = None,
    seq: int | None = None,
) -> bytes:
    """A digital lock event: locked, unlocked, failed_attempt or battery."""
    return _document(kind, at, seq, {
        "method": method,
        "credential": credential,
        "attempts": attempts,
        "battery_percent": battery_percent,
    })


def device_status(
    at: datetime,
    *,
    battery_percent: int | None = None,
    rssi_dbm: int | None = None,
    firmware: str | None = None,
    uptime_s: int | None = None,
    clock_synced: bool | None = None,
    clock_source: str | None = None,
    seq: int | None = None,
) -> bytes:
    """A device status report; the clock object is sent when ``clock_synced`` is given."""
    clock: dict[str, Any] | None = None
    if clock_synced is not None:
        clock = {"synced": clock_synced}
        if clock_source is not None:
            clock["source"] = clock_source
    return _document("device_status", at, seq, {
        "battery_percent": battery_percent,
        "rssi_dbm": rssi_dbm,
        "firmware": firmware,
        "uptime_s": uptime_s,
        "clock": clock,
    })
