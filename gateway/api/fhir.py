"""FHIR R4 Observations from stored readings, shaped after the HL7 Personal Health Device IG.

What follows the IG (PROTOCOLS.md §5): ``Observation.code`` carries the MDC coding and, for a
vital sign, the LOINC one too; quantities are UCUM with the device's precision kept (the value
is a Decimal, written by ``adapters.model.dumps`` with its own digits); an IEEE-11073 special
value becomes ``dataAbsentReason``; blood pressure is one panel (85354-9 / MDC 150020) with
systolic, diastolic and mean components, while the cuff's pulse rate stays an Observation of
its own; ``Observation.device`` names the measuring device.

No ``meta.profile`` is claimed: the IG's profiles point at a PHD Device identified by its
IEEE 11073 system id (an EUI-64), which aidlink does not know for a BLE peripheral, so the
resources are shaped after the IG without claiming conformance to it.

Device flags: the only ones with an exact standard code become ``interpretation``
(v3-ObservationInterpretation); every flag, mapped or not, is kept in a note, word for word,
so nothing the device said is lost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any

from adapters.catalogue import BY_LOINC_ONLY, BY_MDC, LOINC, MDC, UCUM, Metric
from adapters.model import dumps_utc
from gateway.api.readings import Reading, ReadingRow

FHIR_JSON = "application/fhir+json"
_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
# A reading without a patient assignment has no subject; with one but searched by device, the
# caller's own reference is unknown (only its keyed hash is stored), so the pseudonym is shown.
PSEUDONYM_SYSTEM = "urn:aidlink:patient-pseudonym"
# UCUM codes are machine units; these are what a person reads.
_HUMAN_UNIT = {"mm[Hg]": "mmHg", "/min": "beats/min", "Cel": "°C", "[degF]": "°F",
               "[lb_av]": "lb", "[in_i]": "in"}
# Flags with an exact interpretation code. Glucose "result above/below range" is the sensor's
# own measuring range (GATT 0x2A18 Sensor Status Annunciation), which is what the off-scale
# codes mean; the cuff's pulse-rate range bits (0x2A35 status b3-4) judge the pulse against
# the cuff's limits and apply to the pulse rate alone.
_INTERPRETED: dict[str, tuple[str, str]] = {
    "result_above_range": (">", "Off scale high"),
    "result_below_range": ("<", "Off scale low"),
}
_PULSE_INTERPRETED: dict[str, tuple[str, str]] = {
    "pulse_rate_above_range": ("H", "High"),
    "pulse_rate_below_range": ("L", "Low"),
}
_PULSE_TABLE = {**_INTERPRETED, **_PULSE_INTERPRETED}
# Panels by LOINC: catalogue rows without units are groups, not values (adapters/catalogue.py).
PANELS: dict[str, Metric] = {m.loinc: m for m in [*BY_MDC.values(), *BY_LOINC_ONLY.values()]
                             if not m.units}
# Displays of the observation-category codes the catalogue uses besides vital-signs.
_CATEGORIES = {"laboratory": "Laboratory", "exam": "Exam", "procedure": "Procedure"}
# FHIR R4 core extension for the rank of a code on an ordinal scale (context Coding).
_ORDINAL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
_PULSE_MDC = 149546  # MDC_PULS_RATE_NON_INV, the cuff's pulse rate
_NO_TIME = "the device sent no time; effectiveDateTime is when the reading was received"


def instant(moment: datetime) -> str:
    """A FHIR instant in UTC."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _utc(moment: datetime) -> datetime:
    # A resource holds its instants as UTC datetimes: ``to_json`` (and adapters.model.dumps)
    # writes one just as ``instant`` would, and orjson does it in a tenth of the time.
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def observation_id(reading: Reading) -> str:
    """A stable resource id from the reading's key (FHIR ids: [A-Za-z0-9-.]{1,64})."""
    ts, device, group = reading.key
    micros = int(ts.timestamp() * 1_000_000)
    return f"{device}.{group}.{micros}"


def _metric(mdc: int | None, loinc: str) -> Metric | None:
    """The catalogue row of a stored code: by MDC, else (home lab tests) by LOINC alone."""
    return BY_MDC.get(mdc) if mdc is not None else BY_LOINC_ONLY.get(loinc)


@cache
def _codings(mdc: int | None, loinc: str) -> tuple[dict[str, Any], ...]:
    # One tuple per code, shared by every resource that carries it (a 30-day page repeats
    # the same few codes a thousand times); resources only hold it, nothing changes it.
    metric = _metric(mdc, loinc)
    codings: list[dict[str, Any]] = []
    if mdc is not None:
        coding: dict[str, Any] = {"system": MDC, "code": str(mdc)}
        if metric is not None and metric.mdc_ref:
            coding["display"] = metric.mdc_ref
        codings.append(coding)
    entry: dict[str, Any] = {"system": LOINC, "code": loinc}
    if metric is not None and metric.loinc == loinc:
        entry["display"] = metric.display
    codings.append(entry)
    return tuple(codings)


@cache
def _code(mdc: int | None, loinc: str) -> dict[str, Any]:
    return {"coding": _codings(mdc, loinc)}


def _exact(number: Any) -> Decimal:
    # jsonb comes back through json.loads (floats); str() gives back the digits written.
    return Decimal(str(number))


def _coded(code: dict[str, Any]) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": code["system"], "code": code["code"],
                              "display": code["display"]}
    if code.get("rank") is not None:
        coding["extension"] = [{"url": _ORDINAL, "valueDecimal": _exact(code["rank"])}]
    return {"valueCodeableConcept": {"coding": [coding], "text": code["display"]}}


def _sampled(sampled: dict[str, Any], unit: str) -> dict[str, Any]:
    # FHIR R4 SampledData: value_i = origin + factor * data_i, one every ``period`` ms;
    # ``data`` is one string of space-separated decimals.
    data: dict[str, Any] = {
        "origin": {"value": _exact(sampled["origin"]), "unit": unit, "system": UCUM,
                   "code": unit},
        "period": _exact(sampled["period"]),
        "factor": _exact(sampled["factor"]),
    }
    if sampled.get("lower_limit") is not None:
        data["lowerLimit"] = _exact(sampled["lower_limit"])
    if sampled.get("upper_limit") is not None:
        data["upperLimit"] = _exact(sampled["upper_limit"])
    data["dimensions"] = sampled["dimensions"]
    data["data"] = " ".join(str(int(sample)) for sample in sampled["data"])
    return {"valueSampledData": data}


def _add_value(target: dict[str, Any], row: ReadingRow) -> None:
    _, _, _, _, value, unit, _, absent_reason, _, _, _, value_code, sampled = row
    if value_code is None and sampled is None and value is not None:
        # Nearly every row: a quantity, as a dict literal (no helper dict to merge).
        target["valueQuantity"] = {"value": value, "unit": _HUMAN_UNIT.get(unit, unit),
                                   "system": UCUM, "code": unit}
    elif value_code is not None:
        target.update(_coded(value_code))
    elif sampled is not None:
        target.update(_sampled(sampled, unit))
    else:
        target["dataAbsentReason"] = {"coding": [{"system": _ABSENT,
                                                  "code": absent_reason or "error"}]}


def _interpretation(flags: list[str], mdc: int | None) -> list[dict[str, Any]]:
    if not flags:
        return []
    table = _PULSE_TABLE if mdc == _PULSE_MDC else _INTERPRETED
    codes = [table[flag] for flag in flags if flag in table]
    return [{"coding": [{"system": _INTERPRETATION, "code": code, "display": display}]}
            for code, display in codes]


def _notes(flags: list[str], extra: list[str], timed: bool) -> list[dict[str, Any]]:
    texts = []
    if flags:
        texts.append("device flags: " + ", ".join(flags))
    texts.extend(extra)
    if not timed:
        texts.append(_NO_TIME)
    return [{"text": text} for text in texts]


@lru_cache(maxsize=512)
def _flagged(flags: tuple[str, ...], mdc: int | None,
             timed: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    # A single value's interpretation and notes; a page repeats the same few flag sets (an
    # oximeter flags every reading), so they are built once and shared, as codings are.
    return _interpretation(list(flags), mdc), _notes(list(flags), [], timed)


def _panel_notes(rows: list[ReadingRow], timed: bool) -> list[dict[str, Any]]:
    # Flags of the whole measurement (status bits) go on the panel; a flag only some
    # components carry (``implausible``: judged per value) is noted with its component.
    named = [(code, mdc, flags) for _, _, code, mdc, _, _, _, _, flags, _, _, _, _ in rows]
    shared = [f for f in named[0][2] if all(f in flags for _, _, flags in named)]
    extra = []
    for code, mdc, flags in named:
        own = [f for f in flags if f not in shared]
        if own:
            known = _metric(mdc, code)
            name = known.display if known is not None else code
            extra.append(f"{name} ({code}) flags: " + ", ".join(own))
    return _notes(shared, extra, timed)


def _new_head(loinc: str, mdc: int | None, metric: Metric | None, device: str,
              subject: dict[str, Any] | None) -> dict[str, Any]:
    # The keys every resource of one code, device and patient shares, in the order written;
    # ``id`` and ``effectiveDateTime`` are filled in each resource's copy.
    head: dict[str, Any] = {"resourceType": "Observation", "id": None, "status": "final"}
    if metric is not None and metric.vital_sign:
        head["category"] = [{"coding": [{"system": _CATEGORY, "code": "vital-signs",
                                         "display": "Vital Signs"}]}]
    elif metric is not None and metric.category is not None:
        head["category"] = [{"coding": [{"system": _CATEGORY, "code": metric.category,
                                         "display": _CATEGORIES[metric.category]}]}]
    head["code"] = _code(mdc, loinc)
    if subject is not None:
        head["subject"] = subject
    head["effectiveDateTime"] = None
    head["device"] = {"reference": f"Device/{device}"}
    return head


class _Page:
    """Builds the Observations of one page. The parts its resources share (category, code,
    subject, device) are built once per code, device and patient into a head that every
    resource copies; resources only hold the shared parts, nothing changes them.

    Rows are plain tuples (readings.ReadingRow), unpacked into names where they are read."""

    def __init__(self, patient_ref: str | None) -> None:
        self._ref = patient_ref
        self._heads: dict[tuple[str, int | None, bool, str, str | None], dict[str, Any]] = {}

    def _subject(self, patient_key: str | None) -> dict[str, Any] | None:
        if self._ref is not None:
            return {"reference": f"Patient/{self._ref}"}
        if patient_key is not None:
            return {"identifier": {"system": PSEUDONYM_SYSTEM, "value": patient_key}}
        return None

    def _head(self, loinc: str, mdc: int | None, panel: bool, device: str,
              patient_key: str | None) -> dict[str, Any]:
        # A panel's MDC code follows from its LOINC code, so ``mdc`` is None for a panel.
        key = (loinc, mdc, panel, device, None if self._ref is not None else patient_key)
        head = self._heads.get(key)
        if head is None:
            if panel:
                metric = PANELS.get(loinc)
                mdc = metric.mdc if metric is not None else None
            else:
                metric = _metric(mdc, loinc)
            head = self._heads[key] = _new_head(loinc, mdc, metric, device,
                                                self._subject(patient_key))
        return head

    def observation(self, reading: Reading) -> dict[str, Any]:
        """One reading as a FHIR Observation: a panel with components, or a single value."""
        if reading.panel is not None:
            return self._panel(reading)
        row = reading.rows[0]
        ts, device, code, mdc, _, _, measured_at, _, flags, _, patient_key, _, _ = row
        resource = self._head(code, mdc, False, device, patient_key).copy()
        resource["id"] = observation_id(reading)
        resource["effectiveDateTime"] = _utc(measured_at or ts)
        _add_value(resource, row)
        if flags or measured_at is None:
            interpretation, notes = _flagged(tuple(flags), mdc, measured_at is not None)
            if interpretation:
                resource["interpretation"] = interpretation
            if notes:
                resource["note"] = notes
        return resource

    def _panel(self, reading: Reading) -> dict[str, Any]:
        key, _, rows = reading
        ts, device, _, _, _, _, measured_at, _, _, _, patient_key, _, _ = rows[0]
        resource = self._head(key[2], None, True, device, patient_key).copy()
        resource["id"] = observation_id(reading)
        resource["effectiveDateTime"] = _utc(measured_at or ts)
        components = []
        flagged = False
        for row in rows:
            _, _, code, mdc, _, _, _, _, flags, _, _, _, _ = row
            component: dict[str, Any] = {"code": _code(mdc, code)}
            _add_value(component, row)
            if flags:
                flagged = True
                interpretation = _interpretation(flags, mdc)
                if interpretation:
                    component["interpretation"] = interpretation
            components.append(component)
        resource["component"] = components
        timed = measured_at is not None
        notes = _panel_notes(rows, timed) if flagged else _notes([], [], timed)
        if notes:
            resource["note"] = notes
        return resource


def observation(reading: Reading, patient_ref: str | None) -> dict[str, Any]:
    """One reading as a FHIR Observation: a panel with components, or a single value."""
    return _Page(patient_ref).observation(reading)


def observations(readings: list[Reading], patient_ref: str | None) -> list[dict[str, Any]]:
    """The readings of one page as FHIR Observations, sharing what they have in common."""
    page = _Page(patient_ref)
    return [page.observation(reading) for reading in readings]


def searchset(entries: list[dict[str, Any]], *, self_url: str, next_url: str | None,
              base: str) -> dict[str, Any]:
    """A searchset Bundle of resources."""
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": instant(datetime.now(UTC)),
        "link": links,
    }
    # FHIR JSON forbids empty arrays, so an empty page has no ``entry`` at all.
    if entries:
        match = {"mode": "match"}  # one for the Bundle's entries: nothing changes it
        bundle["entry"] = [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r,
             "search": match}
            for r in entries
        ]
    return bundle


def operation_outcome(code: str, diagnostics: str) -> dict[str, Any]:
    """An OperationOutcome carrying one error."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }


def to_json(resource: dict[str, Any]) -> bytes:
    """The JSON of a resource or Bundle built here, byte for byte what adapters.model.dumps
    writes: its datetimes are all UTC (``_utc``), so orjson writes them itself."""
    return dumps_utc(resource)
