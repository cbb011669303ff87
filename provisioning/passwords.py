"""MQTT passwords in the form Mosquitto's password file reads (PBKDF2-SHA512, ``$7$``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# mosquitto_passwd (2.0) writes "$7$<iterations>$<b64 salt>$<b64 hash>": PBKDF2-HMAC-SHA512
# over a 12-byte salt, 101 iterations by default; we use more, which the broker honours.
_ITERATIONS = 10_000
_SALT_BYTES = 12


def new_password() -> str:
    """A random device password (144 bits)."""
    return secrets.token_urlsafe(18)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Hash a password as mosquitto_passwd does."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS)
    b64 = base64.b64encode
    return f"$7${_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Check a password against a ``$7$`` hash."""
    try:
        _, kind, iterations, salt_b64, digest_b64 = encoded.split("$")
    except ValueError:
        return False
    if kind != "7":
        return False
    salt = base64.b64decode(salt_b64)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(iterations))
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))
