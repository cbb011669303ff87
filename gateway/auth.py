"""Bearer tokens: signed by the server, bound to one principal and one role."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ISSUER = "aidlink"
_ALGORITHM = "HS256"


class Role(StrEnum):
    """What a caller may do."""

    CLINICIAN = "clinician"
    TECHNICIAN = "technician"
    AUDITOR = "auditor"
    ADMIN = "admin"


class TokenError(Exception):
    """A token is missing, malformed, expired or not ours; the message says which."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the principal every query is scoped to, the role and the client."""

    principal: str
    role: Role
    subject: str


def _signing_key(secret: bytes) -> bytes:
    # A key of its own for tokens, derived from the server secret, so the secret itself
    # (also used for patient pseudonyms) never signs anything.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"aidlink token signing v1").derive(secret)


def issue_token(secret: bytes, *, principal: str, role: Role, subject: str,
                ttl_seconds: int) -> str:
    """Sign a token for one principal and role."""
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": subject, "principal": principal, "role": str(role),
              "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, _signing_key(secret), algorithm=_ALGORITHM)


def verify_token(secret: bytes, token: str) -> Caller:
    """Check a token's signature, issuer and expiry, and say who it stands for."""
    try:
        claims = jwt.decode(token, _signing_key(secret), algorithms=[_ALGORITHM],
                            issuer=ISSUER, options={"require": ["exp", "sub", "iss"]})
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"token is not valid: {exc}") from exc
    try:
        return Caller(principal=str(claims["principal"]), role=Role(claims["role"]),
                      subject=str(claims["sub"]))
    except (KeyError, ValueError) as exc:
        raise TokenError("token lacks a valid principal or role") from exc
