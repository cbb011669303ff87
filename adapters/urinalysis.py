"""Urine test-strip readers (our JSON document, channel ``urinalysis``) -> one result per pad.

Document v1 (docs/DEVICE_DOCUMENTS.md §10). A reader photographs or reflects one strip and
reports each pad it read:

    {"v": 1, "type": "urinalysis", "at": RFC 3339 with offset, "seq": int?, "strip": text?,
     "results": {"glucose" | "protein" | "blood" | "leukocytes" | "ketones" | "bilirubin":
                     "negative" | "trace" | "1+" | "2+" | "3+" | "4+",
                 "nitrite": "negative" | "positive", "ph": number, "specific_gravity": number}}

At least one pad is required. Ordinal pads become coded observations (FHIR
valueCodeableConcept) on their LOINC [Presence] "by Test strip" codes (catalogue), valued with
SNOMED CT qualifier values, each with its rank on the scale:

    negative 260385009 (0), trace 260405006 (1), + 260347006 (2), ++ 260348001 (3),
    +++ 260349009 (4), ++++ 260350009 (5), positive 10828004 (1, nitrite)

(codes as in public SNOMED CT value sets for urinalysis, e.g. HL7 lab IG examples and LOINC
answer lists LA6577-6/LA11832-5/LA11841-6...). pH (5803-2, UCUM [pH]) and specific gravity
(5811-5, unity) stay numbers; outside 4.5-9.0 and 1.000-1.040 they are kept and flagged
``implausible``. All pads of one strip share the panel 50556-0, so FHIR shows one Observation
with a component per pad, as for blood pressure.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from adapters import documents
from adapters.catalogue import METRICS
from adapters.documents import Document, Number, Part, RecordNumber, ShortText, Timestamp
from adapters.errors import DecodeError
from adapters.model import Coded, DecodeContext, Observation, Unit

CHANNEL = "urinalysis"
SNOMED = "http://snomed.info/sct"

Ordinal = Literal["negative", "trace", "1+", "2+", "3+", "4+"]
# Result text -> (SNOMED CT qualifier value, display, rank on the scale).
_CODES: dict[str, tuple[str, str, int]] = {
    "negative": ("260385009", "Negative", 0),
    "trace": ("260405006", "Trace", 1),
    "1+": ("260347006", "+", 2),
    "2+": ("260348001", "++", 3),
    "3+": ("260349009", "+++", 4),
    "4+": ("260350009", "++++", 5),
    "positive": ("10828004", "Positive", 1),
}
# Pad -> catalogue key, in the order results are emitted (the reader's usual pad order).
PADS = {
    "glucose": "urine_glucose", "protein": "urine_protein", "blood": "urine_blood",
    "leukocytes": "urine_leukocytes", "nitrite": "urine_nitrite", "ketones": "urine_ketones",
    "bilirubin": "urine_bilirubin", "ph": "urine_ph", "specific_gravity": "urine_specific_gravity",
}
_NUMERIC = {"ph": (Unit.PH, Decimal("4.5"), Decimal("9.0")),
            "specific_gravity": (Unit.NONE, Decimal("1.000"), Decimal("1.040"))}


class Results(Part):
    """The pads read from one strip."""

    glucose: Ordinal | None = None
    protein: Ordinal | None = None
    blood: Ordinal | None = None
    leukocytes: Ordinal | None = None
    nitrite: Literal["negative", "positive"] | None = None
    ketones: Ordinal | None = None
    bilirubin: Ordinal | None = None
    ph: Number | None = None
    specific_gravity: Number | None = None


class UrinalysisDocument(Document):
    """Urinalysis document v1."""

    v: Literal[1]
    type: Literal["urinalysis"]
    at: Timestamp
    seq: RecordNumber | None = None
    strip: ShortText | None = None
    results: Results


def decode(payload: bytes, ctx: DecodeContext) -> list[Observation]:
    """Decode one strip into an observation per pad read, all in panel 50556-0."""
    doc = documents.parse(CHANNEL, payload, UrinalysisDocument)
    common = ("unknown_fields",) if documents.unknown_fields(doc) else ()
    panel = METRICS["urine_panel"].loinc
    observations = []
    for pad, key in PADS.items():
        result = getattr(doc.results, pad)
        if result is None:
            continue
        metric = METRICS[key]
        if isinstance(result, str):
            code, display, rank = _CODES[result]
            observations.append(Observation(
                code=metric.loinc, mdc=None, value=None, unit=Unit.NONE, measured_at=doc.at,
                flags=common, panel=panel, sequence=doc.seq,
                coded=Coded(SNOMED, code, display, rank)))
            continue
        unit, low, high = _NUMERIC[pad]
        flags = common if low <= result <= high else ("implausible", *common)
        observations.append(Observation(
            code=metric.loinc, mdc=None, value=result, unit=unit, measured_at=doc.at,
            flags=flags, panel=panel, sequence=doc.seq))
    if not observations:
        raise DecodeError(CHANNEL, f"results: no pad read; send one of {', '.join(PADS)}")
    return observations


def json_schema() -> dict[str, Any]:
    """The JSON Schema of urinalysis document v1."""
    schema = documents.json_schema(CHANNEL, UrinalysisDocument, ())
    schema["$defs"]["Results"]["anyOf"] = [
        {"required": [pad], "properties": {pad: {"not": {"type": "null"}}}} for pad in PADS]
    return schema
