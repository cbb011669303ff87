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
from functools import cache
from typing import Any

from adapters.catalogue import BY_LOINC_ONLY, BY_MDC, LOINC, MDC, UCUM, Metric
from gateway.api.readings import Reading

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


def _value(row: dict[str, Any]) -> dict[str, Any]:
    value: Decimal | None = row["value"]
    if row.get("value_code") is not None:
        return _coded(row["value_code"])
    if row.get("sampled") is not None:
        return _sampled(row["sampled"], row["unit"])
    if value is None:
        return {"dataAbsentReason": {"coding": [{"system": _ABSENT,
                                                 "code": row["absent_reason"] or "error"}]}}
    return {"valueQuantity": {"value": value, "unit": _HUMAN_UNIT.get(row["unit"], row["unit"]),
                              "system": UCUM, "code": row["unit"]}}


def _interpretation(flags: list[str], mdc: int | None) -> list[dict[str, Any]]:
    if not flags:
        return []
    table = _PULSE_TABLE if mdc == _PULSE_MDC else _INTERPRETED
    codes = [table[flag] for flag in flags if flag in table]
    return [{"coding": [{"system": _INTERPRETATION, "code": code, "display": display}]}
            for code, display in codes]


def _subject(row: dict[str, Any], patient_ref: str | None) -> dict[str, Any]:
    if patient_ref is not None:
        return {"subject": {"reference": f"Patient/{patient_ref}"}}
    if row["patient_key"] is not None:
        return {"subject": {"identifier": {"system": PSEUDONYM_SYSTEM,
                                           "value": row["patient_key"]}}}
    return {}


def _base(reading: Reading, code: tuple[dict[str, Any], ...], metric: Metric | None,
          patient_ref: str | None) -> dict[str, Any]:
    first = reading.rows[0]
    resource: dict[str, Any] = {"resourceType": "Observation", "id": observation_id(reading),
                                "status": "final"}
    if metric is not None and metric.vital_sign:
        resource["category"] = [{"coding": [{"system": _CATEGORY, "code": "vital-signs",
                                             "display": "Vital Signs"}]}]
    elif metric is not None and metric.category is not None:
        resource["category"] = [{"coding": [{"system": _CATEGORY, "code": metric.category,
                                             "display": _CATEGORIES[metric.category]}]}]
    resource["code"] = {"coding": code}
    resource.update(_subject(first, patient_ref))
    resource["effectiveDateTime"] = instant(first["measured_at"] or first["ts"])
    resource["device"] = {"reference": f"Device/{first['device_id']}"}
    return resource


def _notes(flags: list[str], extra: list[str], timed: bool) -> list[dict[str, Any]]:
    texts = []
    if flags:
        texts.append("device flags: " + ", ".join(flags))
    texts.extend(extra)
    if not timed:
        texts.append(_NO_TIME)
    return [{"text": text} for text in texts]


def observation(reading: Reading, patient_ref: str | None) -> dict[str, Any]:
    """One reading as a FHIR Observation: a panel with components, or a single value."""
    if reading.panel is not None:
        return _panel(reading, patient_ref)
    row = reading.rows[0]
    metric = _metric(row["mdc"], row["code"])
    resource = _base(reading, _codings(row["mdc"], row["code"]), metric, patient_ref)
    resource.update(_value(row))
    interpretation = _interpretation(row["flags"], row["mdc"])
    if interpretation:
        resource["interpretation"] = interpretation
    notes = _notes(row["flags"], [], row["measured_at"] is not None)
    if notes:
        resource["note"] = notes
    return resource


def _panel(reading: Reading, patient_ref: str | None) -> dict[str, Any]:
    panel_code = reading.key[2]
    metric = PANELS.get(panel_code)
    mdc = metric.mdc if metric is not None else None
    resource = _base(reading, _codings(mdc, panel_code), metric, patient_ref)
    components = []
    for row in reading.rows:
        component: dict[str, Any] = {"code": {"coding": _codings(row["mdc"], row["code"])}}
        component.update(_value(row))
        interpretation = _interpretation(row["flags"], row["mdc"])
        if interpretation:
            component["interpretation"] = interpretation
        components.append(component)
    resource["component"] = components
    # Flags of the whole measurement (status bits) go on the panel; a flag only some
    # components carry (``implausible``: judged per value) is noted with its component.
    shared = [f for f in reading.rows[0]["flags"] if all(f in r["flags"] for r in reading.rows)]
    extra = []
    for row in reading.rows:
        own = [f for f in row["flags"] if f not in shared]
        if own:
            known = _metric(row["mdc"], row["code"])
            name = known.display if known is not None else row["code"]
            extra.append(f"{name} ({row['code']}) flags: " + ", ".join(own))
    notes = _notes(shared, extra, reading.rows[0]["measured_at"] is not None)
    if notes:
        resource["note"] = notes
    return resource


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
        bundle["entry"] = [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r,
             "search": {"mode": "match"}}
            for r in entries
        ]
    return bundle


def operation_outcome(code: str, diagnostics: str) -> dict[str, Any]:
    """An OperationOutcome carrying one error."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }
