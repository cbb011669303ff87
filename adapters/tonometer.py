"""Home tonometer sessions (our JSON document, channel ``tonometer``) -> IOP observations.

Document v1 (docs/DEVICE_DOCUMENTS.md §9). A rebound tonometer used by the patient at home
(iCare HOME-like) measures the intraocular pressure of one or both eyes per session:

    {"v": 1, "type": "iop", "at": RFC 3339 with offset, "seq": int?,
     "right": {"value": 17, "unit": "mm[Hg]", "comparator": "<" | ">"?,
               "quality": "high" | "medium" | "low"?}?,
     "left": {...}?, "position": "sitting" | "supine"?}

At least one eye is required. Each eye becomes one observation with its own LOINC code, which
carries the laterality (79892-6 right eye, 79893-4 left eye, catalogue), in mm[Hg]. A value
at the end of the measuring range (7-50 mm[Hg] for rebound tonometers) comes with a comparator
and is flagged ``result_below_range`` / ``result_above_range``; outside 0-80 mm[Hg] it is
kept and flagged ``implausible``. The device's quality grade becomes ``quality_<grade>`` and a
supine session ``position_supine`` (IOP is higher lying down, so a reader must know).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from adapters import documents
from adapters.calprotectin import COMPARATOR_FLAGS
from adapters.catalogue import METRICS
from adapters.documents import Document, Number, Part, RecordNumber, Timestamp
from adapters.errors import DecodeError
from adapters.model import DecodeContext, Observation, Unit

CHANNEL = "tonometer"

_PLAUSIBLE = (Decimal(0), Decimal(80))
_EYES = (("right", "iop_right"), ("left", "iop_left"))


class Pressure(Part):
    """The intraocular pressure of one eye."""

    value: Number
    unit: Literal["mm[Hg]"]
    comparator: Literal["<", ">"] | None = None
    quality: Literal["high", "medium", "low"] | None = None


class TonometerDocument(Document):
    """Tonometer document v1."""

    v: Literal[1]
    type: Literal["iop"]
    at: Timestamp
    seq: RecordNumber | None = None
    right: Pressure | None = None
    left: Pressure | None = None
    position: Literal["sitting", "supine"] | None = None


def decode(payload: bytes, ctx: DecodeContext) -> list[Observation]:
    """Decode one session into an observation per eye measured, right eye first."""
    doc = documents.parse(CHANNEL, payload, TonometerDocument)
    if doc.right is None and doc.left is None:
        raise DecodeError(CHANNEL, "right, left: at least one eye is required")
    common = ["position_supine"] if doc.position == "supine" else []
    if documents.unknown_fields(doc):
        common.append("unknown_fields")
    observations = []
    for side, key in _EYES:
        eye: Pressure | None = getattr(doc, side)
        if eye is None:
            continue
        flags = []
        if eye.comparator is not None:
            flags.append(COMPARATOR_FLAGS[eye.comparator])
        if not _PLAUSIBLE[0] <= eye.value <= _PLAUSIBLE[1]:
            flags.append("implausible")
        if eye.quality is not None:
            flags.append(f"quality_{eye.quality}")
        metric = METRICS[key]
        observations.append(Observation(
            code=metric.loinc, mdc=metric.mdc, value=eye.value, unit=Unit.MMHG,
            measured_at=doc.at, flags=(*flags, *common), sequence=doc.seq))
    return observations


def json_schema() -> dict[str, Any]:
    """The JSON Schema of tonometer document v1."""
    schema = documents.json_schema(CHANNEL, TonometerDocument, ())
    schema["anyOf"] = [{"required": [side], "properties": {side: {"not": {"type": "null"}}}}
                       for side, _ in _EYES]
    return schema
