"""Digital night supervision ("digital tillsyn"; our JSON document, channel
``night_supervision``) -> events. Events only: an image is never accepted.

Document v1 (docs/DEVICE_DOCUMENTS.md §11). A camera or sensor in the bedroom replaces the
night-time visit; home-care staff make the scheduled check remotely, and the system reports:

    {"v": 1, "type": "check_done" | "check_missed" | "not_in_bed" | "camera_offline"
             | "camera_online", "at": RFC 3339 with offset, "seq": int?,
     "check": {"id": text, "scheduled_at": RFC 3339}?, "method": "camera" | "sensor"?,
     "credential": staff credential?, "room": text?}

Each type becomes ``night_supervision.<type>``; the three check types need ``check``. What the
camera saw never leaves the home (the consent given for digital supervision covers a look,
not a recording), so before any other check the whole document is searched: a key that names
image data (``image``, ``snapshot``, ``frame``, ``jpeg`` ...), a ``data:image/`` URI, a string
opening with a JPEG/PNG/GIF/WebP base64 signature, or any string over 256 characters is
refused with a decode error naming the field; the payload goes to the dead-letter table.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from adapters import documents
from adapters.documents import Credential, Document, Part, RecordNumber, Rule, ShortText, Timestamp
from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event

CHANNEL = "night_supervision"

CHECK_TYPES = ("check_done", "check_missed", "not_in_bed")
_IMAGE_KEY = re.compile(r"image|img|snapshot|frame|photo|picture|jpe?g|png|video|thumbnail",
                        re.IGNORECASE)
# data: URIs, and base64 of the JPEG (FF D8 FF), PNG, GIF and RIFF/WebP signatures.
_IMAGE_TEXT = re.compile(r"\s*(data:(image|video)/|/9j/|iVBORw0KGgo|R0lGOD|UklGR)")
_MAX_TEXT = 256


class Check(Part):
    """The scheduled check an event is about."""

    id: ShortText
    scheduled_at: Timestamp


class NightSupervisionDocument(Document):
    """Night supervision document v1."""

    v: Literal[1]
    type: Literal["check_done", "check_missed", "not_in_bed", "camera_offline", "camera_online"]
    at: Timestamp
    seq: RecordNumber | None = None
    check: Check | None = None
    method: Literal["camera", "sensor"] | None = None
    credential: Credential | None = None
    room: ShortText | None = None


RULES = (Rule(when={"type": CHECK_TYPES}, require=("check",)),)


def _image(node: Any, path: str) -> str | None:
    """The dotted path of the first field that is or may hold image data."""
    items: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else key
            if _IMAGE_KEY.search(key):
                return where
            items.append((where, value))
    elif isinstance(node, list):
        items = [(f"{path}.{index}", value) for index, value in enumerate(node)]
    elif isinstance(node, str) and (len(node) > _MAX_TEXT or _IMAGE_TEXT.match(node)):
        return path
    for where, value in items:
        found = _image(value, where)
        if found is not None:
            return found
    return None


def decode(payload: bytes, ctx: DecodeContext) -> list[Event]:
    """Decode one supervision document into its event, refusing any image data first."""
    found = _image(documents.load(CHANNEL, payload), "")
    if found is not None:
        raise DecodeError(CHANNEL, f"{found}: image data is refused; night supervision "
                                   "sends events only, never images")
    doc = documents.parse(CHANNEL, payload, NightSupervisionDocument)
    documents.enforce(CHANNEL, doc, RULES)
    data: dict[str, Any] = {}
    if doc.check is not None:
        data["check_id"] = doc.check.id
        data["scheduled_at"] = documents.rfc3339(doc.check.scheduled_at)
    for name in ("method", "credential", "room"):
        value = getattr(doc, name)
        if value is not None:
            data[name] = value
    data.update(documents.envelope_data(doc))
    return [Event(type=f"{CHANNEL}.{doc.type}", occurred_at=doc.at, data=data)]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of night supervision document v1."""
    return documents.json_schema(CHANNEL, NightSupervisionDocument, RULES)
