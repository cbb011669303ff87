"""IBD home test: faecal calprotectin (our JSON document, channel ``calprotectin``).

Document v1 (docs/DEVICE_DOCUMENTS.md §8). A home test (a lateral-flow cassette read by a
smartphone camera or a small reader, e.g. IBDoc, CalproSmart) reports one result per test:

    {"v": 1, "type": "calprotectin" | "test_invalid", "at": RFC 3339 with offset, "seq": int?,
     "calprotectin": {"value": 85, "unit": "ug/g", "comparator": "<" | ">"?}?,
     "lot": text?, "reason": text?}

``calprotectin`` needs the result and becomes one observation, LOINC 38445-3 "Calprotectin
[Mass/mass] in Stool" in ug/g (catalogue). A reader's measuring range is narrow (IBDoc:
30-1000 ug/g), so a result beyond it comes as the range limit with a comparator: "<" is flagged
``result_below_range``, ">" ``result_above_range`` (FHIR interpretation "<"/">" off scale).
A value below 0 or above 6000 ug/g (beyond what even a diluted laboratory assay reports) is
kept and flagged ``implausible``. ``test_invalid`` (control line missing, cassette expired,
too little sample) needs ``reason`` and becomes the event ``calprotectin.test_invalid``:
no number is invented for a test that gave none.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from adapters import documents
from adapters.catalogue import METRICS
from adapters.documents import Document, Number, Part, RecordNumber, Rule, ShortText, Timestamp
from adapters.model import DecodeContext, Event, Observation, Record, Unit

CHANNEL = "calprotectin"

_PLAUSIBLE = (Decimal(0), Decimal(6000))
# Comparator of a result at the end of the measuring range -> the flag FHIR interprets.
COMPARATOR_FLAGS = {"<": "result_below_range", ">": "result_above_range"}


class Calprotectin(Part):
    """A calprotectin concentration in micrograms per gram of stool."""

    value: Number
    unit: Literal["ug/g"]
    comparator: Literal["<", ">"] | None = None


class CalprotectinDocument(Document):
    """Calprotectin document v1."""

    v: Literal[1]
    type: Literal["calprotectin", "test_invalid"]
    at: Timestamp
    seq: RecordNumber | None = None
    calprotectin: Calprotectin | None = None
    lot: ShortText | None = None
    reason: ShortText | None = None


RULES = (
    Rule(when={"type": ("calprotectin",)}, require=("calprotectin",)),
    Rule(when={"type": ("test_invalid",)}, require=("reason",)),
)


def decode(payload: bytes, ctx: DecodeContext) -> list[Record]:
    """Decode one test document into its observation, or the invalid-test event."""
    doc = documents.parse(CHANNEL, payload, CalprotectinDocument)
    documents.enforce(CHANNEL, doc, RULES)
    if doc.type == "test_invalid" or doc.calprotectin is None:
        data: dict[str, Any] = {"reason": doc.reason}
        if doc.lot is not None:
            data["lot"] = doc.lot
        data.update(documents.envelope_data(doc))
        return [Event(type=f"{CHANNEL}.test_invalid", occurred_at=doc.at, data=data)]
    result = doc.calprotectin
    flags: list[str] = []
    if result.comparator is not None:
        flags.append(COMPARATOR_FLAGS[result.comparator])
    if not _PLAUSIBLE[0] <= result.value <= _PLAUSIBLE[1]:
        flags.append("implausible")
    if documents.unknown_fields(doc):
        flags.append("unknown_fields")
    metric = METRICS["faecal_calprotectin"]
    return [Observation(code=metric.loinc, mdc=metric.mdc, value=result.value,
                        unit=Unit.UG_PER_G, measured_at=doc.at, flags=tuple(flags),
                        sequence=doc.seq)]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of calprotectin document v1."""
    return documents.json_schema(CHANNEL, CalprotectinDocument, RULES)
