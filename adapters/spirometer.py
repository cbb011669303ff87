"""Spirometer and PEF meter sessions (our JSON document, channel ``spirometer``) -> observations.

Document v1 (docs/DEVICE_DOCUMENTS.md): the best values of one session, as the meter
reports them after its own best-of-N selection:

    {"v": 1, "type": "spirometry" | "peak_flow", "at": RFC 3339 with offset, "seq": int?,
     "fev1": {"value": 2.85, "unit": "L"}?, "fvc": {"value": 3.62, "unit": "L"}?,
     "pef": {"value": 412, "unit": "L/min"}?, "quality": "A".."F" | "U"?, "manoeuvres": int?}

``spirometry`` needs FEV1 and FVC, ``peak_flow`` needs PEF; whatever else is sent is emitted
too, and nothing is computed (no FEV1/FVC ratio: a derived number is the reader's to make).

Deliberate choices:

* Units are fixed per value (L, L/min, the catalogue's UCUM units); any other unit is
  rejected rather than converted, so a meter set to L/s is noticed, not silently rescaled.
* Values outside the plausible range are kept and flagged ``implausible``, as for the cuff;
  FEV1 greater than FVC (impossible in one manoeuvre set) flags both ``fev1_exceeds_fvc``.
* The ATS/ERS 2019 session grade becomes ``quality_grade_<x>`` on every value, and fewer
  than three manoeuvres (the ATS/ERS minimum) ``fewer_than_3_manoeuvres``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field

from adapters import documents
from adapters.catalogue import METRICS
from adapters.documents import Document, Number, Part, RecordNumber, Rule, Timestamp
from adapters.model import DecodeContext, Observation, Unit

CHANNEL = "spirometer"

# Inclusive plausible ranges. Adult FEV1 rarely exceeds 6 L or FVC 8 L; peak flow meters
# read 60-800 L/min (low-range models from 30). Beyond these a value is almost surely an error.
_BOUNDS = {
    "fev1": (Decimal("0.1"), Decimal("8.0")),
    "fvc": (Decimal("0.1"), Decimal("10.0")),
    "pef": (Decimal(20), Decimal(1000)),
}
_MIN_MANOEUVRES = 3


class Volume(Part):
    """A volume in litres."""

    value: Number
    unit: Literal["L"]


class Flow(Part):
    """A flow in litres per minute."""

    value: Number
    unit: Literal["L/min"]


class SpirometerDocument(Document):
    """Spirometer document v1."""

    v: Literal[1]
    type: Literal["spirometry", "peak_flow"]
    at: Timestamp
    seq: RecordNumber | None = None
    fev1: Volume | None = None
    fvc: Volume | None = None
    pef: Flow | None = None
    quality: Literal["A", "B", "C", "D", "E", "F", "U"] | None = None
    manoeuvres: Annotated[int, Field(ge=1, le=20)] | None = None


RULES = (
    Rule(when={"type": ("spirometry",)}, require=("fev1", "fvc")),
    Rule(when={"type": ("peak_flow",)}, require=("pef",)),
)

_UNITS = {"fev1": Unit.L, "fvc": Unit.L, "pef": Unit.L_PER_MIN}


def _session_flags(doc: SpirometerDocument) -> tuple[str, ...]:
    flags = []
    if doc.quality is not None:
        flags.append(f"quality_grade_{doc.quality.lower()}")
    if doc.manoeuvres is not None and doc.manoeuvres < _MIN_MANOEUVRES:
        flags.append(f"fewer_than_{_MIN_MANOEUVRES}_manoeuvres")
    if documents.unknown_fields(doc):
        flags.append("unknown_fields")
    return tuple(flags)


def decode(payload: bytes, ctx: DecodeContext) -> list[Observation]:
    """Decode one session document into FEV1, FVC and PEF observations (those sent)."""
    doc = documents.parse(CHANNEL, payload, SpirometerDocument)
    documents.enforce(CHANNEL, doc, RULES)
    common = _session_flags(doc)
    inverted = doc.fev1 is not None and doc.fvc is not None and doc.fev1.value > doc.fvc.value
    observations = []
    for key in ("fev1", "fvc", "pef"):
        part = getattr(doc, key)
        if part is None:
            continue
        flags = common
        if inverted and key in ("fev1", "fvc"):
            flags = (*flags, "fev1_exceeds_fvc")
        low, high = _BOUNDS[key]
        if not low <= part.value <= high:
            flags = (*flags, "implausible")
        metric = METRICS[key]
        observations.append(
            Observation(
                code=metric.loinc,
                mdc=metric.mdc,
                value=part.value,
                unit=_UNITS[key],
                measured_at=doc.at,
                flags=flags,
                sequence=doc.seq,
            )
        )
    return observations


def json_schema() -> dict[str, Any]:
    """The JSON Schema of spirometer document v1."""
    return documents.json_schema(CHANNEL, SpirometerDocument, RULES)
