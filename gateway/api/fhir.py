"""FHIR R4 resources from stored rows, shaped after the HL7 Personal Health Device IG."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from adapters.catalogue import BY_MDC, LOINC, MDC, UCUM

FHIR_JSON = "application/fhir+json"
_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
# UCUM codes are machine units; these are what a person reads.
_HUMAN_UNIT = {"mm[Hg]": "mmHg", "/min": "beats/min", "Cel": "°C", "[degF]": "°F",
               "[lb_av]": "lb", "[in_i]": "in"}


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def observation_id(row: dict[str, Any]) -> str:
    """A stable resource id from the natural key (FHIR ids: [A-Za-z0-9-.]{1,64})."""
    micros = int(row["ts"].timestamp() * 1_000_000)
    return f"{row['device_id']}.{row['code']}.{micros}"


def observation(row: dict[str, Any], patient_ref: str) -> dict[str, Any]:
    """One stored observation as a FHIR Observation."""
    metric = BY_MDC.get(row["mdc"]) if row["mdc"] is not None else None
    codings: list[dict[str, Any]] = []
    if row["mdc"] is not None:
        coding = {"system": MDC, "code": str(row["mdc"])}
        if metric is not None and metric.mdc_ref:
            coding["display"] = metric.mdc_ref
        codings.append(coding)
    loinc = {"system": LOINC, "code": row["code"]}
    if metric is not None:
        loinc["display"] = metric.display
    codings.append(loinc)
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_id(row),
        "status": "final",
        "code": {"coding": codings},
        "subject": {"reference": f"Patient/{patient_ref}"},
        "effectiveDateTime": _instant(row["measured_at"] or row["ts"]),
        "device": {"reference": f"Device/{row['device_id']}"},
    }
    if metric is not None and metric.vital_sign:
        resource["category"] = [{"coding": [{"system": _CATEGORY, "code": "vital-signs"}]}]
    value: Decimal | None = row["value"]
    if value is None:
        resource["dataAbsentReason"] = {
            "coding": [{"system": _ABSENT, "code": row["absent_reason"] or "error"}]
        }
    else:
        resource["valueQuantity"] = {
            "value": value,
            "unit": _HUMAN_UNIT.get(row["unit"], row["unit"]),
            "system": UCUM,
            "code": row["unit"],
        }
    if row["flags"]:
        resource["note"] = [{"text": "device flags: " + ", ".join(row["flags"])}]
    if row["measured_at"] is None:
        resource.setdefault("note", []).append(
            {"text": "the device sent no time; effectiveDateTime is when it was received"}
        )
    return resource


def searchset(entries: list[dict[str, Any]], *, self_url: str, next_url: str | None,
              base: str) -> dict[str, Any]:
    """A searchset Bundle of resources."""
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": _instant(datetime.now(UTC)),
        "link": links,
        "entry": [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r,
             "search": {"mode": "match"}}
            for r in entries
        ],
    }


def operation_outcome(code: str, diagnostics: str) -> dict[str, Any]:
    """An OperationOutcome carrying one error."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }
