"""The key ring that signs and checks bearer tokens: ES256 (P-256) keys kept in PostgreSQL.

Table ``token_signing_keys`` (migration 0008) holds every key: the private key as a PKCS#8 PEM
encrypted under a passphrase derived from the server secret, the public key as a JWK, and when
the key was retired. Exactly one key is current (``retired_at IS NULL``) and signs new tokens.
``rotate()`` retires it and makes a fresh one current; a retired key stays in the JWKS, and
keeps verifying, until no token it signed can still be valid (``retired_at`` plus the longest
token lifetime plus the clock leeway). Then it is dropped.

The first key of a database is derived from the server secret (HKDF), so every process that
knows the secret, the API, the command line and test helpers, signs with the same key before
any rotation without having to share anything else. Keys made by ``rotate()`` are random.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from psycopg.types.json import Jsonb

from gateway.auth import (
    ALGORITHM,
    LEEWAY_SECONDS,
    MAX_TOKEN_TTL_SECONDS,
    SigningKey,
    TokenError,
)

Conn = psycopg.Connection[Any]
Connect = Callable[[], AbstractContextManager[Conn]]

# How long a retired key stays in the JWKS and keeps verifying.
RETIRED_WINDOW = timedelta(seconds=MAX_TOKEN_TTL_SECONDS + LEEWAY_SECONDS)
# Order of the P-256 group: the first key's private scalar is taken modulo it.
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class NotCached(Exception):
    """The key ring would have to read the database to answer (see ``KeyRing.cached``)."""


class KeyRingError(Exception):
    """The stored keys cannot be used (for example under another server secret)."""


def _passphrase(secret: bytes) -> bytes:
    # A key of its own, one way from the server secret, like the CA passphrase.
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"aidlink token signing keys at rest v1").derive(secret)
    return derived.hex().encode()


def _b64(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode()


def _unb64(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def public_jwk(public: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public key as a JWK (RFC 7517) whose ``kid`` is its RFC 7638 thumbprint."""
    numbers = public.public_numbers()
    members = {"crv": "P-256", "kty": "EC", "x": _b64(numbers.x), "y": _b64(numbers.y)}
    # RFC 7638: SHA-256 over the required members, sorted, without whitespace.
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return {**members, "kid": kid, "alg": ALGORITHM, "use": "sig"}


def _from_jwk(jwk: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    numbers = ec.EllipticCurvePublicNumbers(_unb64(jwk["x"]), _unb64(jwk["y"]), ec.SECP256R1())
    return numbers.public_key()


def genesis_key(secret: bytes) -> SigningKey:
    """The first key of every database, derived from the server secret."""
    # 48 bytes reduced modulo the group order, as FIPS 186-5 A.2.1 does, so the bias is
    # negligible; the result is never 0.
    material = HKDF(algorithm=hashes.SHA256(), length=48, salt=None,
                    info=b"aidlink token signing key 0 v1").derive(secret)
    scalar = int.from_bytes(material, "big") % (_P256_ORDER - 1) + 1
    private = ec.derive_private_key(scalar, ec.SECP256R1())
    return SigningKey(kid=public_jwk(private.public_key())["kid"], private_key=private)


@dataclass(frozen=True, slots=True)
class _Public:
    key: ec.EllipticCurvePublicKey
    jwk: dict[str, str]
    created_at: datetime
    retired_at: datetime | None

    def dropped(self, now: datetime) -> bool:
        return self.retired_at is not None and now - self.retired_at > RETIRED_WINDOW


class KeyRing:
    """The database's signing keys; thread-safe, one per process and database.

    Public keys are cached: refreshed every ``refresh_seconds``, and on a token whose ``kid``
    is unknown at most once every ``reload_seconds`` (so forged kids cannot hammer the
    database).
    """

    def __init__(self, connect: Connect, secret: bytes, *, reload_seconds: float = 5.0,
                 refresh_seconds: float = 60.0) -> None:
        self._connect = connect
        self._secret = secret
        self._reload_seconds = reload_seconds
        self._refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._reloading = threading.Lock()
        self._public: dict[str, _Public] = {}
        self._private: dict[str, SigningKey] = {}
        self._loaded_at: float | None = None
        self._generation = 0

    def current(self) -> SigningKey:
        """The key that signs new tokens; the first one is made if there is none."""
        with self._connect() as conn:
            kid = self._ensure_current(conn)
            with self._lock:
                if kid not in self._public:
                    self._load(conn)
                cached = self._private.get(kid)
            if cached is not None:
                return cached
            row = conn.execute("SELECT private_key_pem FROM token_signing_keys WHERE kid = %s",
                               (kid,)).fetchone()
        if row is None:
            raise KeyRingError(f"token signing key {kid} vanished while being read")
        key = self._decrypt(kid, bytes(row[0]))
        with self._lock:
            self._private[kid] = key
        return key

    def rotate(self) -> str:
        """Retire the current key and make a new random one current; its kid."""
        private = ec.generate_private_key(ec.SECP256R1())
        with self._connect() as conn, conn.transaction():
            conn.execute("LOCK TABLE token_signing_keys IN SHARE ROW EXCLUSIVE MODE")
            conn.execute("UPDATE token_signing_keys SET retired_at = now()"
                         " WHERE retired_at IS NULL")
            kid = self._insert(conn, private)
        with self._connect() as conn, self._lock:
            self._load(conn)
        return kid

    def reload(self) -> None:
        """Read the keys again now (after a rotation by another process, say)."""
        with self._connect() as conn, self._lock:
            self._load(conn)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWK Set (RFC 7517 §5): the current key first, then retired ones still valid."""
        self._refresh(self._reload_seconds)
        now = datetime.now(UTC)
        with self._lock:
            entries = [e for e in self._public.values() if not e.dropped(now)]
        entries.sort(key=lambda e: (e.retired_at is not None, -e.created_at.timestamp()))
        return {"keys": [dict(e.jwk) for e in entries]}

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey:
        """The public key named ``kid``, or TokenError saying why there is none to use."""
        self._refresh(self._refresh_seconds)
        with self._lock:
            entry = self._public.get(kid)
        if entry is None:
            self._refresh(self._reload_seconds, wait=True)
            with self._lock:
                entry = self._public.get(kid)
        return _usable(kid, entry)

    @property
    def generation(self) -> int:
        """How many times the keys have been read: a check made under another generation
        may rest on a key since dropped."""
        with self._lock:
            return self._generation

    @property
    def cached(self) -> CachedKeys:
        """The same keys without the database: for checking tokens where waiting on it would
        hold up others (the API's event loop)."""
        return CachedKeys(self)

    def cached_public_key(self, kid: str) -> ec.EllipticCurvePublicKey:
        """``public_key`` as long as it need not read the database; NotCached when it would
        (the cache is due for its refresh, or ``kid`` is unknown and may have been added)."""
        if not self._fresh(self._refresh_seconds):
            raise NotCached(f"the cached keys are due for a reload (looking up key {kid})")
        with self._lock:
            entry = self._public.get(kid)
        if entry is None:
            raise NotCached(f"key {kid} is not cached")
        return _usable(kid, entry)

    # --- inside -------------------------------------------------------------------------

    def _fresh(self, max_age: float) -> bool:
        with self._lock:
            return self._loaded_at is not None and time.monotonic() - self._loaded_at < max_age

    def _refresh(self, max_age: float, *, wait: bool = False) -> None:
        """Reload when the cache is older than ``max_age``; one thread reloads at a time, and
        unless told to wait, the others go on with the cache they have."""
        if self._fresh(max_age):
            return
        if not self._reloading.acquire(blocking=wait or self._loaded_at is None):
            return
        try:
            if not self._fresh(max_age):
                self.reload()
        finally:
            self._reloading.release()

    def _load(self, conn: Conn) -> None:
        """Replace the cache of public keys; the caller holds the lock."""
        self._ensure_current(conn)
        cutoff = datetime.now(UTC) - RETIRED_WINDOW
        rows = conn.execute(
            "SELECT kid, public_jwk, created_at, retired_at FROM token_signing_keys"
            " WHERE retired_at IS NULL OR retired_at > %s", (cutoff,),
        ).fetchall()
        self._public = {
            kid: _Public(_from_jwk(jwk), jwk, created, retired)
            for kid, jwk, created, retired in rows
        }
        self._private = {k: v for k, v in self._private.items() if k in self._public}
        self._loaded_at = time.monotonic()
        self._generation += 1

    def _ensure_current(self, conn: Conn) -> str:
        """The current key's kid, making the first key when the table has none current."""
        with conn.transaction():
            row = conn.execute("SELECT kid FROM token_signing_keys"
                               " WHERE retired_at IS NULL").fetchone()
            if row is not None:
                return str(row[0])
            # Two processes starting on an empty table must not both make a key.
            conn.execute("LOCK TABLE token_signing_keys IN SHARE ROW EXCLUSIVE MODE")
            row = conn.execute("SELECT kid FROM token_signing_keys"
                               " WHERE retired_at IS NULL").fetchone()
            if row is not None:
                return str(row[0])
            empty = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM token_signing_keys)"
                                 ).fetchone()
            private = (genesis_key(self._secret).private_key if empty and empty[0]
                       else ec.generate_private_key(ec.SECP256R1()))
            return self._insert(conn, private)

    def _insert(self, conn: Conn, private: ec.EllipticCurvePrivateKey) -> str:
        jwk = public_jwk(private.public_key())
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(_passphrase(self._secret)))
        conn.execute("INSERT INTO token_signing_keys (kid, private_key_pem, public_jwk)"
                     " VALUES (%s, %s, %s)", (jwk["kid"], pem, Jsonb(jwk)))
        return jwk["kid"]

    def _decrypt(self, kid: str, pem: bytes) -> SigningKey:
        try:
            private = serialization.load_pem_private_key(pem, _passphrase(self._secret))
        except (ValueError, TypeError) as exc:
            raise KeyRingError(f"token signing key {kid} cannot be decrypted: the server"
                               " secret is not the one it was stored under") from exc
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise KeyRingError(f"token signing key {kid} is not an EC key")
        return SigningKey(kid=kid, private_key=private)


@dataclass(frozen=True, slots=True)
class CachedKeys:
    """A key ring's cached keys as ``VerificationKeys``: a lookup that would need the
    database raises NotCached."""

    ring: KeyRing

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey:
        """The cached key named ``kid``; TokenError when it is no longer trusted."""
        return self.ring.cached_public_key(kid)


def _usable(kid: str, entry: _Public | None) -> ec.EllipticCurvePublicKey:
    """The key of ``entry``, or TokenError saying why there is none to use."""
    if entry is None:
        raise TokenError(f"token is not valid: it is signed by unknown key {kid!r}")
    if entry.dropped(datetime.now(UTC)):
        raise TokenError(f"token is not valid: key {kid} was retired at"
                         f" {entry.retired_at} and is no longer trusted")
    return entry.key
