"""Digital door locks in home care (our JSON document, channel ``lock``) -> canonical events.

Document v1 (docs/DEVICE_DOCUMENTS.md), one event per document:

    {"v": 1, "type": "locked" | "unlocked" | "failed_attempt" | "battery",
     "at": RFC 3339 with offset, "seq": int?,
     "method": "app" | "key" | "code" | "manual" | "auto"?, "credential": text?,
     "attempts": int?, "battery_percent": 0-100?}

Each type becomes the event ``lock.<type>``. ``credential`` names who opened the door: the
staff member's app account, electronic key or code slot, never the person who lives there.
A value shaped like a Swedish personal identity number is refused, so a misconfigured lock
cannot put one into the event store. ``manual`` is the thumb-turn inside and ``auto`` the
lock's own relocking; neither has a credential.

Requirements: ``unlocked`` and ``failed_attempt`` need ``method``; an ``unlocked`` by app,
key or code needs ``credential`` (an unlock nobody can be named for is what an audit asks
about); ``battery`` needs ``battery_percent``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from adapters import documents
from adapters.documents import Credential, Document, Percent, RecordNumber, Rule, Timestamp
from adapters.model import DecodeContext, Event

CHANNEL = "lock"

CREDENTIAL_METHODS = ("app", "key", "code")


class LockDocument(Document):
    """Lock document v1."""

    v: Literal[1]
    type: Literal["locked", "unlocked", "failed_attempt", "battery"]
    at: Timestamp
    seq: RecordNumber | None = None
    method: Literal["app", "key", "code", "manual", "auto"] | None = None
    credential: Credential | None = None
    # Consecutive failed attempts, as locks that block after N failures count them.
    attempts: Annotated[int, Field(ge=1, le=1000)] | None = None
    battery_percent: Percent | None = None


RULES = (
    Rule(when={"type": ("unlocked", "failed_attempt")}, require=("method",)),
    Rule(when={"type": ("unlocked",), "method": CREDENTIAL_METHODS}, require=("credential",)),
    Rule(when={"type": ("battery",)}, require=("battery_percent",)),
)

_FIELDS = ("method", "credential", "attempts", "battery_percent")


def decode(payload: bytes, ctx: DecodeContext) -> list[Event]:
    """Decode one lock document into its event."""
    doc = documents.parse(CHANNEL, payload, LockDocument)
    documents.enforce(CHANNEL, doc, RULES)
    data: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(doc, name)
        if value is not None:
            data[name] = value
    data.update(documents.envelope_data(doc))
    return [Event(type=f"lock.{doc.type}", occurred_at=doc.at, data=data)]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of lock document v1."""
    return documents.json_schema(CHANNEL, LockDocument, RULES)
