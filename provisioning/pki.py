"""Device certificates: issued from a CSR the device brings (the server never holds its key)
or from a key generated once and handed out only in the provisioning bundle; renewed under the
current policy; revoked into the principal's CRL (``provisioning.ca`` keeps the authorities).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from provisioning.ca import (
    BACKDATE,
    REASONS,
    Conn,
    PassphraseError,
    authority,
    chain_pem,
    crl_pem,
    current_crl,
    ensure_authorities,
    generate_key,
    key_algorithm_of,
    leaf,
    now_or,
    pem_of,
    server_certificate,
    trust_bundle_pem,
)
from provisioning.errors import ConflictError, InvalidInputError, NotFoundError
from provisioning.policy import Policy, PolicyError, current_policy


@dataclass(frozen=True, slots=True)
class Issued:
    """A new certificate; ``private_key_pem`` only when the server generated the key."""

    certificate_pem: str
    chain_pem: str
    private_key_pem: str | None
    serial: str
    not_after: datetime



def _subject_key(policy: Policy, device_id: str, csr_pem: str | bytes | None
                 ) -> tuple[CertificatePublicKeyTypes, str | None]:
    """The key to certify: the CSR's (checked against the policy) or a new one."""
    if csr_pem is None:
        key = generate_key(policy.key_algorithm)
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return key.public_key(), private.decode()
    data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise InvalidInputError(f"the CSR for device {device_id} is not a PEM certificate"
                                " signing request") from exc
    if not csr.is_signature_valid:
        raise InvalidInputError(f"the CSR for device {device_id} is not signed by its own key")
    public_key = csr.public_key()
    algorithm = key_algorithm_of(public_key)
    if algorithm != policy.key_algorithm:
        raise PolicyError(f"the CSR for device {device_id} has an {algorithm} key, which"
                          f" {policy.label()} does not allow (key_algorithm:"
                          f" {policy.key_algorithm})")
    return public_key, None


def _kept_key(conn: Conn, policy: Policy, device_id: str, serial: str
              ) -> CertificatePublicKeyTypes:
    """The public key of certificate ``serial``, if the current policy still allows it."""
    row = conn.execute("SELECT pem FROM certificates WHERE serial = %s", (serial,)).fetchone()
    if row is None:
        raise NotFoundError(f"certificate {serial} of device {device_id} does not exist")
    public_key = x509.load_pem_x509_certificate(str(row[0]).encode()).public_key()
    algorithm = key_algorithm_of(public_key)
    if algorithm != policy.key_algorithm:
        raise PolicyError(f"device {device_id} holds an {algorithm} key, which {policy.label()}"
                          f" no longer allows (key_algorithm: {policy.key_algorithm}); renew it"
                          " with a CSR for a new key")
    return public_key


def _device(conn: Conn, device_id: str, *, retired_ok: bool = False) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT id, principal_code, client_id, state FROM devices WHERE id = %s",
                    (device_id,))
        row = cur.fetchone()
    if row is None:
        raise NotFoundError(f"device {device_id} does not exist")
    if row["state"] == "retired" and not retired_ok:
        raise ConflictError(f"device {device_id} is retired; it gets no certificate")
    return row


def _history(conn: Conn, device_id: str, action: str, actor: str, **detail: Any) -> None:
    conn.execute("INSERT INTO device_history (device_id, action, actor, detail)"
                 " VALUES (%s, %s, %s, %s)", (device_id, action, actor, Jsonb(detail)))


def _certify(conn: Conn, passphrase: bytes, device: dict[str, Any], csr_pem: str | bytes | None,
             actor: str, action: str, now: datetime, *, kept_from: str | None = None) -> Issued:
    principal = device["principal_code"]
    policy = current_policy(conn, principal)
    if kept_from is not None:
        public_key, private_pem = _kept_key(conn, policy, device["id"], kept_from), None
    else:
        public_key, private_pem = _subject_key(policy, device["id"], csr_pem)
    ca = authority(conn, passphrase, principal, now)
    cert = leaf(ca, public_key, device["client_id"], now - BACKDATE,
                 now + timedelta(days=policy.certificate_lifetime_days))
    serial = format(cert.serial_number, "x")
    conn.execute(
        "INSERT INTO certificates (serial, device_id, principal_code, subject_cn, not_before,"
        " not_after, key_algorithm, pem) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (serial, device["id"], principal, device["client_id"], cert.not_valid_before_utc,
         cert.not_valid_after_utc, key_algorithm_of(public_key), pem_of(cert)),
    )
    _history(conn, device["id"], action, actor, serial=serial, policy_version=policy.version,
             server_generated_key=private_pem is not None)
    return Issued(pem_of(cert), chain_pem(conn, principal), private_pem, serial,
                  cert.not_valid_after_utc)


def issue(conn: Conn, passphrase: bytes, *, device_id: str, principal: str, client_id: str,
          csr_pem: str | bytes | None = None, actor: str = "system",
          now: datetime | None = None) -> Issued:
    """Certify a device (CN = its MQTT client id), revoking earlier ones as superseded."""
    moment = now_or(now)
    device = _device(conn, device_id)
    if (device["principal_code"], device["client_id"]) != (principal, client_id):
        raise ConflictError(f"device {device_id} is client {device['client_id']} of principal"
                            f" {device['principal_code']}, not client {client_id} of {principal}")
    with conn.transaction():
        issued = _certify(conn, passphrase, device, csr_pem, actor, "certificate_issued", moment)
        conn.execute(
            "UPDATE certificates SET revoked_at = %s, revocation_reason = 'superseded',"
            " replaced_by = %s WHERE device_id = %s AND serial <> %s AND revoked_at IS NULL",
            (moment, issued.serial, device_id, issued.serial),
        )
    return issued


def renew(conn: Conn, passphrase: bytes, *, device_id: str, csr_pem: str | bytes | None = None,
          keep_key: bool = False, actor: str = "system", now: datetime | None = None) -> Issued:
    """A successor to the device's current certificate, which stays valid until it expires.

    The new certificate is for the CSR's key, for the key the device already holds
    (``keep_key``: nothing secret has to reach the device), or else for a new generated key.
    """
    if keep_key and csr_pem is not None:
        raise InvalidInputError("renew with the device's CSR or with its current key, not both")
    moment = now_or(now)
    device = _device(conn, device_id)
    with conn.transaction():
        row = conn.execute(
            "SELECT serial, revoked_at, revocation_reason, not_after FROM certificates"
            " WHERE device_id = %s ORDER BY issued_at DESC, not_after DESC LIMIT 1 FOR UPDATE",
            (device_id,),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"device {device_id} has no certificate to renew")
        serial, revoked_at, reason, not_after = row
        if revoked_at is not None:
            raise ConflictError(f"device {device_id} is revoked (certificate {serial}, {reason});"
                                " a revoked device is not renewed")
        if not_after <= moment:
            raise ConflictError(f"certificate {serial} of device {device_id} expired at"
                                f" {not_after.isoformat()}; issue a new one instead")
        issued = _certify(conn, passphrase, device, csr_pem, actor, "certificate_renewed", moment,
                          kept_from=serial if keep_key else None)
        conn.execute("UPDATE certificates SET replaced_by = %s WHERE serial = %s",
                     (issued.serial, serial))
    return issued


def revoke(conn: Conn, passphrase: bytes, device_id: str, reason: str, actor: str, *,
           missing_ok: bool = False, now: datetime | None = None) -> dict[str, Any]:
    """Revoke a device's certificates (the next CRL lists them) and its MQTT password.

    ``missing_ok`` suits lifecycle transitions, where a device may hold no credentials.
    """
    if reason not in REASONS:
        raise InvalidInputError(f"revocation reason {reason!r} is not one of {', '.join(REASONS)}")
    moment = now_or(now)
    device = _device(conn, device_id, retired_ok=True)
    # Checked first, so that a wrong passphrase changes nothing and the next CRL can be signed.
    authority(conn, passphrase, device["principal_code"], moment)
    with conn.transaction():
        rows = conn.execute(
            "UPDATE certificates SET revoked_at = %s, revocation_reason = %s"
            " WHERE device_id = %s AND revoked_at IS NULL RETURNING serial",
            (moment, reason, device_id),
        ).fetchall()
        # A password is a credential too: without its hash the broker's next password file
        # (and the SIGHUP after it) shuts the device out.
        cleared = conn.execute(
            "UPDATE devices SET mqtt_password_hash = NULL"
            " WHERE id = %s AND mqtt_password_hash IS NOT NULL RETURNING id", (device_id,),
        ).fetchone() is not None
        if not rows and not cleared and not missing_ok:
            raise NotFoundError(f"device {device_id} has no certificate or password to revoke")
        serials = sorted(str(row[0]) for row in rows)
        if rows or cleared:
            _history(conn, device_id, "certificates_revoked", actor, serials=serials,
                     password=cleared, reason=reason)
    return {"device_id": device_id, "principal": device["principal_code"], "serials": serials,
            "password_revoked": cleared, "reason": reason, "revoked_at": moment}


def due_for_renewal(conn: Conn, now: datetime | None = None) -> list[dict[str, Any]]:
    """Unexpired, unrevoked current certificates inside their policy's renewal window.

    Devices being reconditioned are left out: their credentials are revoked once the wipe
    is confirmed, and a renewal before then would hand a device about to be erased a
    certificate outliving the revocation of its current one."""
    moment = now_or(now)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT c.device_id, d.client_id, d.principal_code AS principal, c.serial,"
            " c.not_after FROM certificates c JOIN devices d ON d.id = c.device_id"
            " WHERE c.revoked_at IS NULL AND c.replaced_by IS NULL"
            " AND d.state NOT IN ('retired', 'reconditioning')"
            " AND c.not_after > %s ORDER BY c.not_after, c.serial", (moment,),
        )
        rows = cur.fetchall()
    policies: dict[str, Policy] = {}
    due = []
    for row in rows:
        policy = policies.get(row["principal"]) or current_policy(conn, row["principal"])
        policies[row["principal"]] = policy
        renew_from = row["not_after"] - timedelta(days=policy.renew_before_days)
        if renew_from <= moment:
            due.append({**row, "renew_from": renew_from})
    return due

# What other modules use from here, including what moved to provisioning.ca.
__all__ = [
    "REASONS", "Issued", "PassphraseError", "chain_pem", "crl_pem", "current_crl",
    "due_for_renewal", "ensure_authorities", "generate_key", "issue", "key_algorithm_of",
    "renew", "revoke", "server_certificate", "trust_bundle_pem",
]
