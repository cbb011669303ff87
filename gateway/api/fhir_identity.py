"""Identifiers in FHIR resources: Swedish personal identity numbers, local patient references
and the principal that owns a device."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

PERSONNUMMER = "http://electronichealth.se/identifier/personnummer"
SAMORDNINGSNUMMER = "http://electronichealth.se/identifier/samordningsnummer"
# A principal's code is its SCB code (DESIGN.md reference data: county 20 Region Dalarna,
# municipality 2080 Falun); one system covers both, as principals share one namespace.
PRINCIPAL_SYSTEM = "urn:aidlink:principal:scb-code"
_TWELVE = re.compile(r"^(\d{8})-?(\d{4})$")


def local_patient_system(principal: str) -> str:
    """The system of a principal's own patient references (they are unique only within it)."""
    return f"urn:aidlink:principal:{principal}:patient"


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(digits):
        value = int(char) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def swedish_id_system(ref: str) -> str | None:
    """The system of a 12-digit personnummer (YYYYMMDD-NNNC) or samordningsnummer (day + 60)
    with a valid date and check digit, or None when the reference is not one."""
    match = _TWELVE.fullmatch(ref)
    if match is None:
        return None
    born, tail = match.groups()
    year, month, day = int(born[:4]), int(born[4:6]), int(born[6:])
    system = PERSONNUMMER
    if day > 60:
        day, system = day - 60, SAMORDNINGSNUMMER
    try:
        date(year, month, day)
    except ValueError:
        return None
    # The check digit covers the ten digits YYMMDDNNNC (Skatteverket's Luhn rule).
    return system if _luhn(born[2:] + tail) else None


def patient_identifier(ref: str, principal: str) -> dict[str, Any]:
    """The Patient.identifier for a caller's reference: national systems write the 12 digits
    without a separator; anything else is the principal's local reference."""
    system = swedish_id_system(ref)
    if system is not None:
        return {"use": "official", "system": system, "value": ref.replace("-", "")}
    return {"use": "usual", "system": local_patient_system(principal), "value": ref}
