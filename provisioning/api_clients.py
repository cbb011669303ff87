"""API clients: calling systems registered per principal, with a role, scopes and a secret.

A client gets tokens from ``POST /oauth/token`` (client credentials). Its secret is shown once,
when the client is added; only an scrypt hash is kept. A principal's current policy may list
the clients it allows (``api_clients``, by client id or name); an empty list allows any.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from gateway.auth import ROLE_SCOPES, SCOPES, Role
from provisioning import participation
from provisioning.errors import ConflictError, InvalidInputError, NotFoundError
from provisioning.policy import Policy, PolicyError, current_policy

Conn = psycopg.Connection[Any]

# scrypt with n=2^14, r=8, p=1 (16 MiB, tens of milliseconds): the parameters RFC 7914 and
# OWASP give for interactive logins; they are stored in each hash, so they can grow later.
_N, _R, _P = 2**14, 8, 1
_SALT_BYTES = 16
_HASH_BYTES = 32
_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$")
_COLUMNS = ("client_id, principal_code AS principal, role, scopes, name, created_at,"
            " created_by, disabled_at")


class ClientAuthError(Exception):
    """A client could not be authenticated; the message says why, without helping a guesser."""


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """``scrypt$<n>$<r>$<p>$<base64 salt>$<base64 hash>`` of a client secret."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_HASH_BYTES,
                            maxmem=64 * 1024 * 1024)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_secret(secret: str, encoded: str) -> bool:
    """Whether ``secret`` matches a hash made by ``hash_secret``."""
    try:
        kind, n, r, p, salt_b64, digest_b64 = encoded.split("$")
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
        if kind != "scrypt":
            return False
        digest = hashlib.scrypt(secret.encode(), salt=salt, n=int(n), r=int(r), p=int(p),
                                dklen=len(expected), maxmem=64 * 1024 * 1024)
    except ValueError:
        return False
    return hmac.compare_digest(digest, expected)


# Compared against when the client id is unknown, so an unknown id costs as much time as a
# wrong secret and response times do not tell which client ids exist.
_DUMMY_HASH = hash_secret("no client has this secret", salt=b"\0" * _SALT_BYTES)


def check_scopes(role: Role, scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes, sorted, if they are known and of use to the role; InvalidInputError if not."""
    chosen = sorted(set(scopes))
    if not chosen:
        raise InvalidInputError(f"a client needs at least one scope ({', '.join(SCOPES)})")
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown:
        raise InvalidInputError(f"unknown scope {', '.join(unknown)}; scopes are"
                                f" {', '.join(SCOPES)}")
    useless = [s for s in chosen if s not in ROLE_SCOPES[role]]
    if useless:
        raise InvalidInputError(f"scope {', '.join(useless)} is of no use to role {role}"
                                f" (its scopes: {', '.join(sorted(ROLE_SCOPES[role]))})")
    return tuple(chosen)


def policy_refusal(policy: Policy, client_id: str, name: str) -> str | None:
    """Why the policy does not allow this client, or None when it does."""
    if not policy.api_clients or client_id in policy.api_clients or name in policy.api_clients:
        return None
    return (f"{policy.label()}: api_clients does not list client {client_id} or its name"
            f" {name!r} (it lists {', '.join(policy.api_clients)})")


def add_client(conn: Conn, *, principal: str, role: Role, scopes: Iterable[str], name: str,
               actor: str, client_id: str | None = None) -> tuple[dict[str, Any], str]:
    """Register a client; the stored record and its secret (shown this once, never kept)."""
    chosen = check_scopes(role, scopes)
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise InvalidInputError("client name must be 1 to 200 characters")
    if client_id is None:
        client_id = f"ac-{secrets.token_hex(8)}"
    elif not _CLIENT_ID.fullmatch(client_id):
        raise InvalidInputError(f"client id {client_id!r} must be 3 to 64 letters, digits,"
                                " '.', '_' or '-', starting with a letter or digit")
    participation.require_joined(conn, principal, "adding an API client")
    refusal = policy_refusal(current_policy(conn, principal), client_id, name)
    if refusal is not None:
        raise PolicyError(refusal)
    secret = secrets.token_urlsafe(32)
    try:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "INSERT INTO api_clients (client_id, principal_code, role, scopes, secret_hash,"
                f" name, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (client_id, principal, str(role), list(chosen), hash_secret(secret), name,
                 actor),
            )
            row = cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise ConflictError(f"client {client_id} already exists") from None
    assert row is not None
    return row, secret


def list_clients(conn: Conn, principal: str | None = None) -> list[dict[str, Any]]:
    """Clients (all, or one principal's) by principal and id; never their secret hashes."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM api_clients"
                    " WHERE %s::text IS NULL OR principal_code = %s"
                    " ORDER BY principal_code, client_id", (principal, principal))
        return cur.fetchall()


def disable_client(conn: Conn, client_id: str) -> dict[str, Any]:
    """Disable a client for good: it gets no more tokens (its current ones run out)."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM api_clients WHERE client_id = %s FOR UPDATE",
                    (client_id,))
        row = cur.fetchone()
        if row is None:
            raise NotFoundError(f"client {client_id} does not exist")
        if row["disabled_at"] is not None:
            raise ConflictError(f"client {client_id} was already disabled at"
                                f" {row['disabled_at'].isoformat()}")
        cur.execute(f"UPDATE api_clients SET disabled_at = now() WHERE client_id = %s"
                    f" RETURNING {_COLUMNS}", (client_id,))
        updated = cur.fetchone()
    assert updated is not None
    return updated


def authenticate(conn: Conn, client_id: str, secret: str) -> dict[str, Any]:
    """The client, if ``secret`` is its secret and it is enabled; ClientAuthError otherwise."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS}, secret_hash FROM api_clients WHERE client_id = %s",
                    (client_id,))
        row = cur.fetchone()
    if row is None:
        verify_secret(secret, _DUMMY_HASH)
        raise ClientAuthError(f"client {client_id} is unknown or its secret is wrong")
    if not verify_secret(secret, row.pop("secret_hash")):
        raise ClientAuthError(f"client {client_id} is unknown or its secret is wrong")
    if row["disabled_at"] is not None:
        raise ClientAuthError(f"client {client_id} was disabled at"
                              f" {row['disabled_at'].isoformat()}")
    return row


def refusal_now(conn: Conn, client: dict[str, Any]) -> str | None:
    """Why the principal's current policy no longer allows this client, if it does not."""
    try:
        policy = current_policy(conn, client["principal"])
    except NotFoundError:
        return f"principal {client['principal']} of client {client['client_id']} is gone"
    return policy_refusal(policy, client["client_id"], client["name"])
