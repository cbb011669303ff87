"""A device's confirmation that it erased itself (our JSON document, channel ``wipe``).

Document v1 (docs/DEVICE_DOCUMENTS.md), one ``device.wiped`` event:

    {"v": 1, "type": "wipe_done", "at": RFC 3339 with offset, "seq": int?, "nonce": text}

During reconditioning the gateway sends ``aidlink/v1/{client}/down/wipe`` with a random
nonce; the device erases its patient data and settings and answers with this document
carrying the same nonce, which the gateway records as the wipe's confirmation.
"""

from __future__ import annotations

from typing import Any, Literal

from adapters import documents
from adapters.documents import Document, RecordNumber, ShortText, Timestamp
from adapters.model import DecodeContext, Event

CHANNEL = "wipe"
EVENT = "device.wiped"


class WipeDocument(Document):
    """Wipe confirmation document v1."""

    v: Literal[1]
    type: Literal["wipe_done"]
    at: Timestamp
    seq: RecordNumber | None = None
    nonce: ShortText


def decode(payload: bytes, ctx: DecodeContext) -> list[Event]:
    """Decode one wipe confirmation into a ``device.wiped`` event."""
    doc = documents.parse(CHANNEL, payload, WipeDocument)
    data: dict[str, Any] = {"nonce": doc.nonce}
    data.update(documents.envelope_data(doc))
    return [Event(type=EVENT, occurred_at=doc.at, data=data)]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of wipe document v1."""
    return documents.json_schema(CHANNEL, WipeDocument, ())
