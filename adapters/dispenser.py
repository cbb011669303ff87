"""Medication dispenser events (our JSON document, channel ``dispenser``) -> canonical events.

Document v1 (docs/DEVICE_DOCUMENTS.md), one event per document; the vocabulary follows
PROTOCOLS.md §6 (Evondos, Hero, Medido, Swedish municipal practice, SCAIP dty 0011):

    {"v": 1, "type": "dose_missed", "at": RFC 3339 with offset, "seq": int?,
     "dose": {"id": "D-0800", "scheduled_at": RFC 3339, "compartment": 14?}?,
     "remaining_doses": int?, "confirmation": "button" | "sensor" | "staff"?,
     "reason": text?, "credential": staff credential?, "fault_code": text?,
     "battery_percent": 0-100?}

Each type becomes the event ``dispenser.<type>``. The dose lifecycle types need ``dose``;
``supply_low`` needs ``remaining_doses``. ``dose_dispensed`` means the bag or cup left the
machine, which is not proof of ingestion; only ``dose_taken`` claims that, and
``confirmation`` says on what evidence. The dose id is the pharmacy's or the machine's
opaque id, never a patient identifier; ``credential`` (who opened the door) is refused when
it looks like a personal identity number.
"""

from __future__ import annotations

from typing import Any, Literal

from adapters import documents
from adapters.documents import (
    Count,
    Credential,
    Document,
    Part,
    Percent,
    RecordNumber,
    Rule,
    ShortText,
    Timestamp,
)
from adapters.model import DecodeContext, Event

CHANNEL = "dispenser"

DOSE_TYPES = (
    "dose_due",  # the dose is ready and the person is being reminded
    "dose_dispensed",  # the bag or cup is out of the machine
    "dose_taken",  # intake confirmed (button, sensor or staff)
    "dose_late",  # not taken within the grace period; reminders continue
    "dose_missed",  # not taken at all; the bag is locked away, staff alerted
    "dose_skipped",  # deliberately not given (declined, hospital stay, staff decision)
)
DEVICE_TYPES = (
    "supply_low",  # few doses left (vendors warn at 3-7 days)
    "supply_empty",
    "door_opened",  # the refill or service door was opened
    "tamper",  # forced opening or removal detected
    "jam",  # mechanical fault: cup or roll jammed
    "power_lost",  # mains lost; running on battery
    "power_restored",
    "offline",  # the dispenser lost its connection (reported by it or its hub afterwards)
    "online",
)

DispenserType = Literal[
    "dose_due", "dose_dispensed", "dose_taken", "dose_late", "dose_missed", "dose_skipped",
    "supply_low", "supply_empty", "door_opened", "tamper", "jam", "power_lost",
    "power_restored", "offline", "online",
]


class Dose(Part):
    """The dose an event is about."""

    id: ShortText
    scheduled_at: Timestamp
    compartment: Count | None = None


class DispenserDocument(Document):
    """Dispenser document v1."""

    v: Literal[1]
    type: DispenserType
    at: Timestamp
    seq: RecordNumber | None = None
    dose: Dose | None = None
    remaining_doses: Count | None = None
    confirmation: Literal["button", "sensor", "staff"] | None = None
    reason: ShortText | None = None
    credential: Credential | None = None
    fault_code: ShortText | None = None
    battery_percent: Percent | None = None


RULES = (
    Rule(when={"type": DOSE_TYPES}, require=("dose",)),
    Rule(when={"type": ("supply_low",)}, require=("remaining_doses",)),
)

# Body fields copied into the event data when sent, in this order.
_FIELDS = (
    "remaining_doses", "confirmation", "reason", "credential", "fault_code", "battery_percent",
)


def decode(payload: bytes, ctx: DecodeContext) -> list[Event]:
    """Decode one dispenser document into its event."""
    doc = documents.parse(CHANNEL, payload, DispenserDocument)
    documents.enforce(CHANNEL, doc, RULES)
    data: dict[str, Any] = {}
    if doc.dose is not None:
        data["dose_id"] = doc.dose.id
        data["scheduled_at"] = documents.rfc3339(doc.dose.scheduled_at)
        if doc.dose.compartment is not None:
            data["compartment"] = doc.dose.compartment
    for name in _FIELDS:
        value = getattr(doc, name)
        if value is not None:
            data[name] = value
    data.update(documents.envelope_data(doc))
    return [Event(type=f"dispenser.{doc.type}", occurred_at=doc.at, data=data)]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of dispenser document v1."""
    return documents.json_schema(CHANNEL, DispenserDocument, RULES)
