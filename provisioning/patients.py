"""Patient references are stored only as keyed hashes (pseudonyms), never in clear."""

from __future__ import annotations

import hashlib
import hmac
import re

from provisioning.errors import InvalidInputError

# A FHIR id-like reference: what a clinician's system calls the patient. It may be a
# personnummer (12 digits, possibly with a hyphen), so it is never stored as given.
_REF = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def check_patient_ref(ref: str) -> str:
    """Return ref if it is a valid patient reference, else raise naming the problem."""
    if not _REF.fullmatch(ref):
        raise InvalidInputError(
            "patient reference must be 1-64 characters of letters, digits, '-' and '.'"
        )
    return ref


def patient_key(secret: bytes, principal: str, ref: str) -> str:
    """The pseudonym of a patient within one principal (HMAC-SHA256, hex)."""
    check_patient_ref(ref)
    message = f"{principal}\x00{ref}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()
