"""Bearer tokens: ES256 JWTs signed by the server's key ring, bound to one principal, one role
and a set of scopes.

A token's claims: ``iss`` (always ``aidlink``), ``sub`` (the API client, or who a command-line
token was made for), ``principal``, ``role``, ``scope`` (space-separated, RFC 8693 style),
``iat`` and ``exp``; its header names the signing key in ``kid``. Keys live in
``gateway.token_keys``; this module only signs and checks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "aidlink"
ALGORITHM = "ES256"
# No token lives longer than this, so a retired key can leave the JWKS this long after its
# retirement: every token it signed has expired by then.
MAX_TOKEN_TTL_SECONDS = 24 * 3600
# Clock difference between this server and a verifier that we tolerate.
LEEWAY_SECONDS = 30


class Role(StrEnum):
    """What a caller may do."""

    CLINICIAN = "clinician"
    TECHNICIAN = "technician"
    AUDITOR = "auditor"
    ADMIN = "admin"


class Scope(StrEnum):
    """What a token may be used for; the API checks the scope as well as the role."""

    OBSERVATIONS = "observations"
    EVENTS = "events"
    DEVICES = "devices"
    PROVISIONING = "provisioning"
    AUDIT = "audit"


SCOPES: tuple[str, ...] = tuple(scope.value for scope in Scope)

# The scopes a role can make use of: a token of that role gets these unless it asks for fewer.
ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.CLINICIAN: frozenset({Scope.OBSERVATIONS, Scope.EVENTS, Scope.DEVICES}),
    Role.TECHNICIAN: frozenset({Scope.DEVICES, Scope.PROVISIONING}),
    Role.AUDITOR: frozenset({Scope.AUDIT}),
    Role.ADMIN: frozenset(SCOPES),
}


class TokenError(Exception):
    """A token is missing, malformed, expired or not ours; the message says which."""


@dataclass(frozen=True, slots=True, init=False)
class Caller:
    """Who is calling: the principal every query is scoped to, the role, the client and the
    scopes its token grants (by default all those of the role)."""

    principal: str
    role: Role
    subject: str
    scopes: frozenset[str]

    def __init__(self, principal: str, role: Role, subject: str,
                 scopes: Iterable[str] | None = None) -> None:
        object.__setattr__(self, "principal", principal)
        object.__setattr__(self, "role", role)
        object.__setattr__(self, "subject", subject)
        granted = ROLE_SCOPES[role] if scopes is None else frozenset(str(s) for s in scopes)
        object.__setattr__(self, "scopes", frozenset(granted))


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One ES256 (P-256) private key and the key id its tokens carry."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey


class VerificationKeys(Protocol):
    """Where public keys are looked up by ``kid`` (the key ring)."""

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey:
        """The key, or TokenError naming why there is none to use."""
        ...


def scope_text(scopes: Iterable[str]) -> str:
    """Scopes as the space-separated, sorted text of the ``scope`` claim."""
    return " ".join(sorted(set(scopes)))


def issue_token(key: SigningKey, *, principal: str, role: Role, subject: str,
                ttl_seconds: int, scopes: Iterable[str] | None = None) -> str:
    """Sign a token for one principal, role and set of scopes (default: the role's)."""
    if not 0 < ttl_seconds <= MAX_TOKEN_TTL_SECONDS:
        raise ValueError(f"token lifetime {ttl_seconds} s is outside 1..{MAX_TOKEN_TTL_SECONDS}"
                         " s (tokens are short-lived)")
    granted = ROLE_SCOPES[role] if scopes is None else frozenset(scopes)
    unknown = sorted(set(granted) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope {', '.join(unknown)}; scopes are {', '.join(SCOPES)}")
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": subject, "principal": principal, "role": str(role),
              "scope": scope_text(granted), "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM,
                      headers={"kid": key.kid})


def verify_token(keys: VerificationKeys, token: str) -> Caller:
    """Check a token's key, signature, issuer and expiry, and say who it stands for."""
    return verify_token_until(keys, token)[0]


def verify_token_until(keys: VerificationKeys, token: str) -> tuple[Caller, int]:
    """``verify_token``, and the token's expiry (its ``exp``, seconds since the epoch)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"token is not valid: {exc}") from exc
    if header.get("alg") != ALGORITHM:
        raise TokenError(f"token is not valid: algorithm {header.get('alg')!r} is not"
                         f" {ALGORITHM}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError("token is not valid: its header names no signing key (kid)")
    public = keys.public_key(kid)
    try:
        claims = jwt.decode(token, public, algorithms=[ALGORITHM], issuer=ISSUER,
                            leeway=LEEWAY_SECONDS,
                            options={"require": ["exp", "iat", "sub", "iss"]})
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"token is not valid: {exc}") from exc
    try:
        role = Role(claims["role"])
        principal = str(claims["principal"])
    except (KeyError, ValueError) as exc:
        raise TokenError("token lacks a valid principal or role") from exc
    scope = claims.get("scope")
    if not isinstance(scope, str):
        raise TokenError("token lacks its scope claim")
    # Only known scopes count; anything else in the claim grants nothing.
    granted = frozenset(scope.split()) & frozenset(SCOPES)
    return (Caller(principal=principal, role=role, subject=str(claims["sub"]), scopes=granted),
            int(claims["exp"]))
