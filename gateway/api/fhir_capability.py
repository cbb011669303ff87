"""The CapabilityStatement of ``/fhir/r4``: exactly what the routes in fhir_routes.py do.

The Observation search parameters come from fhir_params.SEARCH_PARAMS, the table the search
itself is checked against, so the statement cannot advertise a parameter that is refused.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from gateway.api.fhir import FHIR_JSON
from gateway.api.fhir_params import SEARCH_PARAMS

RELEASED = "2026-11-22"
# Standard definitions of the parameters that have one (FHIR R4 search parameter registry).
_DEFINITIONS = {
    "subject": "http://hl7.org/fhir/SearchParameter/Observation-subject",
    "code": "http://hl7.org/fhir/SearchParameter/clinical-code",
    "date": "http://hl7.org/fhir/SearchParameter/clinical-date",
    "device": "http://hl7.org/fhir/SearchParameter/Observation-device",
}
_SECURITY = (
    "Every request except this statement carries Authorization: Bearer <token>. Tokens are "
    "signed by the server and bound to one principal (region or municipality) and one "
    "role; a token reads only its principal's "
    "data, and every read of patient data is written to the principal's access log. Roles "
    "clinician and admin read Observation and Patient; technician also reads Device. Send "
    "X-Purpose (default care) and X-End-User to have them logged. SMART on FHIR is not "
    "supported."
)


def _version() -> str:
    try:
        return metadata.version("aidlink")
    except metadata.PackageNotFoundError:
        return "unknown"


def _security(token_url: str | None) -> dict[str, Any]:
    security: dict[str, Any] = {"cors": False}
    description = _SECURITY
    if token_url is not None:
        security["service"] = [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "OAuth", "display": "OAuth"}]}]
        description += (f" Clients get tokens with the OAuth2 client-credentials grant "
                        f"(RFC 6749 section 4.4) at {token_url}.")
    security["description"] = description
    return security


def capability(base: str, *, token_url: str | None) -> dict[str, Any]:
    """The statement, with ``base`` (the FHIR base URL the caller used) as the address and
    ``token_url`` the OAuth2 token endpoint when one is served."""
    observation_params = []
    for name, (kind, documentation) in SEARCH_PARAMS.items():
        param = {"name": name, "type": kind, "documentation": documentation}
        if name in _DEFINITIONS:
            param["definition"] = _DEFINITIONS[name]
        observation_params.append(param)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": RELEASED,
        "publisher": "aidlink",
        "kind": "instance",
        "software": {"name": "aidlink", "version": _version()},
        "implementation": {
            "description": "aidlink gateway: measurements from connected assistive aids in "
                           "home care, read-only",
            "url": base,
        },
        "fhirVersion": "4.0.1",
        "format": [FHIR_JSON],
        "rest": [{
            "mode": "server",
            "documentation": "Read-only. Errors are OperationOutcome resources naming what "
                             "was wrong; unknown search parameters are refused, _format and "
                             "_pretty are ignored (answers are always application/fhir+json).",
            "security": _security(token_url),
            "resource": [
                {"type": "Observation",
                 "documentation": "Shaped after the HL7 Personal Health Device IG; blood "
                                  "pressure is one 85354-9 panel with components. Paged by "
                                  "the Bundle's next link.",
                 "interaction": [{"code": "search-type"}],
                 "searchParam": observation_params},
                {"type": "Device", "interaction": [{"code": "read"}]},
                {"type": "Patient",
                 "documentation": "Identifier only: the caller's own reference, for a "
                                  "patient its principal has had a device assigned to.",
                 "interaction": [{"code": "read"}]},
            ],
        }],
    }
