"""One-lead ECG recorders (our JSON document, channel ``ecg``) -> waveform, rhythm, heart rate.

Document v1 (docs/DEVICE_DOCUMENTS.md §12). A handheld or wrist recorder (thumb or finger
electrodes, the lead-I ECG used to screen for atrial fibrillation) sends one document per
recording; ``at`` is when the recording started:

    {"v": 1, "type": "ecg", "at": RFC 3339 with offset, "seq": int?,
     "lead": "I", "sampling_frequency": 100..512 (integer Hz), "uv_per_count": number > 0,
     "samples": [int, ...],
     "rhythm": "sinus_rhythm" | "atrial_fibrillation" | "inconclusive" | "too_noisy",
     "heart_rate": {"value": number, "unit": "/min"}?}

``samples`` are the ADC counts, signed 16-bit, one per 1/sampling_frequency s; a sample in
microvolts is ``count * uv_per_count``. A recording is at most 30 s (the length of the
recorders' standard strip) at up to 512 Hz, so at most 15360 samples; the document may then
reach 128 KiB, beyond the 64 KiB every other document keeps to. Refused, with the reason
named: an empty array, a non-integer or out-of-range count, more than 30 s at the frequency
sent.

Out come up to three observations (catalogue rows ``ecg_*``):
* the waveform, one row (never a row per sample): MDC 131329 lead I / LOINC 11524-6, a
  ``Sampled`` in mV with origin 0, period 1000/Hz ms and factor uv_per_count/1000 (FHIR
  valueSampledData; data stays the device's integers, as in the FHIR R4 example
  observation-example-sample-data);
* the rhythm the device classified, LOINC 8601-7, coded in SNOMED CT: 426783006 sinus rhythm,
  164889003 atrial fibrillation (both as in physionetchallenges/evaluation-2020
  dx_mapping_scored.csv), 419984006 "Inconclusive" (qualifier value; public laboratory
  result value sets, e.g. CDC ReportStream's) for inconclusive and too-noisy recordings. The
  classes are those of the consumer recorders (HealthKit HKElectrocardiogram.Classification,
  mirrored in the HL7 personal-health-record-format IG: sinus rhythm, atrial fibrillation,
  inconclusive, inconclusive poor reading). A too-noisy recording is flagged
  ``poor_recording`` on every observation, as its waveform is the reason;
* the heart rate when sent, LOINC 8867-4 / MDC 147842 in /min; outside 20-300 /min it is kept
  and flagged ``implausible``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from adapters import documents
from adapters.catalogue import METRICS
from adapters.documents import Document, Number, Part, RecordNumber, Timestamp
from adapters.errors import DecodeError
from adapters.model import Coded, DecodeContext, Observation, Sampled, Unit

CHANNEL = "ecg"
SNOMED = "http://snomed.info/sct"

MAX_SECONDS = 30
MAX_HZ = 512
MIN_HZ = 100  # below this a QRS complex (80-120 ms) spans too few samples to be read
MAX_SAMPLES = MAX_SECONDS * MAX_HZ
COUNT_RANGE = (-(2**15), 2**15 - 1)  # signed 16-bit ADC counts
# 15360 counts of up to 7 bytes ("-32768,") are 105 KiB; the rest of the document is small.
MAX_BYTES = 128 * 1024
_PERIOD_PLACES = Decimal("0.000001")  # ms; 1000/300 Hz is kept to the nanosecond
_PLAUSIBLE_RATE = (Decimal(20), Decimal(300))

# Rhythm -> (SNOMED CT code, display, flag the recording gets).
RHYTHMS: dict[str, tuple[str, str, str | None]] = {
    "sinus_rhythm": ("426783006", "Sinus rhythm", None),
    "atrial_fibrillation": ("164889003", "Atrial fibrillation", None),
    "inconclusive": ("419984006", "Inconclusive", None),
    "too_noisy": ("419984006", "Inconclusive", "poor_recording"),
}


def _show(value: Any) -> str:
    return str(value) if isinstance(value, Decimal) else repr(value)


def _samples(value: Any) -> Any:
    """Check the count array as a whole, so the reason names the first bad sample."""
    if not isinstance(value, list):
        raise ValueError("expected a JSON array of integer counts")
    if not value:
        raise ValueError("no samples; a recording needs at least one")
    if len(value) > MAX_SAMPLES:
        raise ValueError(f"{len(value)} samples; the limit is {MAX_SAMPLES} "
                         f"({MAX_SECONDS} s at {MAX_HZ} Hz)")
    low, high = COUNT_RANGE
    for index, count in enumerate(value):
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"sample {index} is {_show(count)}, not an integer count")
        if not low <= count <= high:
            raise ValueError(f"sample {index} is {count}, outside {low}..{high}")
    return value


Samples = Annotated[
    list[Annotated[int, Field(ge=COUNT_RANGE[0], le=COUNT_RANGE[1])]],
    Field(min_length=1, max_length=MAX_SAMPLES), BeforeValidator(_samples),
]


class HeartRate(Part):
    """The heart rate the recorder derived from the recording."""

    value: Number
    unit: Literal["/min"]


class EcgDocument(Document):
    """ECG document v1."""

    v: Literal[1]
    type: Literal["ecg"]
    at: Timestamp
    seq: RecordNumber | None = None
    lead: Literal["I"]
    sampling_frequency: Annotated[int, Field(ge=MIN_HZ, le=MAX_HZ)]
    uv_per_count: Annotated[Number, Field(gt=0, le=1000)]
    samples: Samples
    rhythm: Literal["sinus_rhythm", "atrial_fibrillation", "inconclusive", "too_noisy"]
    heart_rate: HeartRate | None = None


def _period_ms(hz: int) -> Decimal:
    period = (Decimal(1000) / hz).quantize(_PERIOD_PLACES).normalize()
    return period.quantize(Decimal(1)) if period == period.to_integral_value() else period


def decode(payload: bytes, ctx: DecodeContext) -> list[Observation]:
    """Decode one recording into its waveform, rhythm and (when sent) heart rate."""
    doc = documents.parse(CHANNEL, payload, EcgDocument, max_bytes=MAX_BYTES)
    allowed = MAX_SECONDS * doc.sampling_frequency
    if len(doc.samples) > allowed:
        raise DecodeError(CHANNEL, f"samples: {len(doc.samples)} samples at "
                          f"{doc.sampling_frequency} Hz are longer than {MAX_SECONDS} s "
                          f"(at most {allowed})")
    code, display, quality = RHYTHMS[doc.rhythm]
    common = [] if quality is None else [quality]
    if documents.unknown_fields(doc):
        common.append("unknown_fields")
    flags = tuple(common)
    wave, rhythm = METRICS["ecg_lead_i"], METRICS["ecg_rhythm"]
    sampled = Sampled(origin=Decimal(0), period_ms=_period_ms(doc.sampling_frequency),
                      factor=doc.uv_per_count.scaleb(-3), data=tuple(doc.samples))
    observations = [
        Observation(code=wave.loinc, mdc=wave.mdc, value=None, unit=Unit.MV,
                    measured_at=doc.at, flags=flags, sequence=doc.seq, sampled=sampled),
        Observation(code=rhythm.loinc, mdc=rhythm.mdc, value=None, unit=Unit.NONE,
                    measured_at=doc.at, flags=flags, sequence=doc.seq,
                    coded=Coded(SNOMED, code, display)),
    ]
    if doc.heart_rate is not None:
        rate = doc.heart_rate.value
        low, high = _PLAUSIBLE_RATE
        rate_flags = flags if low <= rate <= high else ("implausible", *flags)
        metric = METRICS["ecg_heart_rate"]
        observations.append(Observation(
            code=metric.loinc, mdc=metric.mdc, value=rate, unit=Unit.PER_MIN,
            measured_at=doc.at, flags=rate_flags, sequence=doc.seq))
    return observations


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ECG document v1."""
    schema = documents.json_schema(CHANNEL, EcgDocument, ())
    # ``Number`` states its own schema, which would hide the scale's bounds.
    schema["properties"]["uv_per_count"] = {"exclusiveMinimum": 0, "maximum": 1000,
                                            "type": "number"}
    return schema
