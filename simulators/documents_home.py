"""Payload builders for the home-test documents of issue 8 (docs/DEVICE_DOCUMENTS.md §8-).

Same rules as ``simulators.documents``: compact UTF-8 JSON, envelope first (``v``, ``type``,
``at``, ``seq``), body in documented order, Decimals with their own digits, None omitted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def _document(kind: str, at: datetime, seq: int | None, body: Mapping[str, Any]) -> bytes:
    doc: dict[str, Any] = {"v": VERSION, "type": kind, "at": _at(at)}
    if seq is not None:
        doc["seq"] = seq
    doc.update({name: value for name, value in body.items() if value is not None})
    return dumps(doc).encode()


def _result(value: Decimal, unit: str, comparator: str | None = None,
            **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"value": value, "unit": unit}
    if comparator is not None:
        result["comparator"] = comparator
    result.update({name: item for name, item in extra.items() if item is not None})
    return result


def calprotectin(at: datetime, value: Decimal | None = None, *, comparator: str | None = None,
                 lot: str | None = None, reason: str | None = None,
                 seq: int | None = None) -> bytes:
    """A calprotectin test: a result in ug/g, or (``value`` None) an invalid test."""
    if value is None:
        return _document("test_invalid", at, seq, {"lot": lot, "reason": reason})
    return _document("calprotectin", at, seq, {
        "calprotectin": _result(value, "ug/g", comparator), "lot": lot})


def intraocular_pressure(at: datetime, *, right: Decimal | None = None,
                         left: Decimal | None = None, quality: str | None = None,
                         position: str | None = None, seq: int | None = None) -> bytes:
    """A tonometer session: the IOP of one or both eyes in mm[Hg]."""
    return _document("iop", at, seq, {
        "right": None if right is None else _result(right, "mm[Hg]", quality=quality),
        "left": None if left is None else _result(left, "mm[Hg]", quality=quality),
        "position": position,
    })


def urinalysis(at: datetime, results: Mapping[str, str | Decimal], *, strip: str | None = None,
               seq: int | None = None) -> bytes:
    """One read urine test strip: ``results`` by pad name ("glucose": "1+", "ph": 6.0 ...)."""
    return _document("urinalysis", at, seq, {"strip": strip, "results": dict(results)})


def night_supervision(kind: str, at: datetime, *, check_id: str | None = None,
                      scheduled_at: datetime | None = None, method: str | None = None,
                      credential: str | None = None, room: str | None = None,
                      seq: int | None = None) -> bytes:
    """A digital night supervision event (never an image: the channel carries events only)."""
    check = None
    if check_id is not None and scheduled_at is not None:
        check = {"id": check_id, "scheduled_at": _at(scheduled_at)}
    return _document(kind, at, seq, {"check": check, "method": method,
                                     "credential": credential, "room": room})



def ecg(at: datetime, samples: Sequence[int], *, sampling_frequency: int,
        uv_per_count: Decimal, rhythm: str, heart_rate: Decimal | None = None,
        lead: str = "I", seq: int | None = None) -> bytes:
    """A one-lead ECG recording started at ``at``: ADC counts and the device's classification."""
    return _document("ecg", at, seq, {
        "lead": lead, "sampling_frequency": sampling_frequency, "uv_per_count": uv_per_count,
        "samples": list(samples), "rhythm": rhythm,
        "heart_rate": None if heart_rate is None else _result(heart_rate, "/min"),
    })
