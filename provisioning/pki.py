"""The PKI: one root CA, an intermediate CA per principal, device certificates and CRLs.

CA keys live in the database only as PKCS#8 encrypted with the caller's passphrase. A device
that brings a CSR keeps its key to itself; otherwise the server makes one and returns it once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from provisioning.errors import ConflictError, InvalidInputError, NotFoundError, ProvisioningError
from provisioning.policy import Policy, PolicyError, current_policy

Conn = psycopg.Connection[Any]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

ROOT_LIFETIME = timedelta(days=20 * 365)
INTERMEDIATE_LIFETIME = timedelta(days=10 * 365)
SERVER_LIFETIME = timedelta(days=397)
# A CRL past its next_update makes OpenSSL refuse every certificate of that CA, so CRLs must
# be re-signed (`aidlink broker-config`) well within this period.
CRL_LIFETIME = timedelta(days=7)
# Backdated so that a device whose clock runs a little behind accepts a fresh certificate.
BACKDATE = timedelta(minutes=5)
MIN_PASSPHRASE_BYTES = 16
CLIENT_URN = "urn:aidlink:client:"
# Holds are reversible and removals belong to delta CRLs; neither fits a device revocation.
REASONS = tuple(flag.name for flag in x509.ReasonFlags if flag not in (
    x509.ReasonFlags.remove_from_crl, x509.ReasonFlags.certificate_hold))


class PassphraseError(ProvisioningError):
    """The CA passphrase is too short or does not decrypt a CA key."""


@dataclass(frozen=True, slots=True)
class Issued:
    """A new certificate; ``private_key_pem`` only when the server generated the key."""

    certificate_pem: str
    chain_pem: str
    private_key_pem: str | None
    serial: str
    not_after: datetime


@dataclass(frozen=True, slots=True)
class _Authority:
    certificate: x509.Certificate
    key: PrivateKey


def key_algorithm_of(key: CertificatePublicKeyTypes) -> str:
    """A public key's algorithm in policy terms (``EC-P256``, ``RSA-2048``, ``Ed25519`` …)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "EC-P256", "secp384r1": "EC-P384"}.get(
            key.curve.name, f"EC-{key.curve.name}")
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    return type(key).__name__.removesuffix("PublicKey")


def generate_key(algorithm: str) -> PrivateKey:
    """A fresh private key of a policy's key algorithm."""
    if algorithm == "EC-P256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EC-P384":
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm.startswith("RSA-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(algorithm[4:]))
    raise InvalidInputError(f"key algorithm {algorithm!r} is not supported")


def _now(now: datetime | None) -> datetime:
    # Certificates carry whole seconds; the database rows must say the same.
    return (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)


def _digest(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _ca_name(principal: str | None) -> str:
    return "the root CA" if principal is None else f"principal {principal}'s intermediate CA"


def _load(conn: Conn, passphrase: bytes, principal: str | None) -> _Authority | None:
    row = conn.execute(
        "SELECT certificate_pem, encrypted_key_pem FROM certificate_authorities"
        " WHERE principal_code IS NOT DISTINCT FROM %s", (principal,),
    ).fetchone()
    if row is None:
        return None
    try:
        key = serialization.load_pem_private_key(row[1].encode(), passphrase)
    except ValueError as exc:
        raise PassphraseError(f"the key of {_ca_name(principal)} could not be decrypted:"
                              " wrong CA passphrase") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ProvisioningError(f"the key of {_ca_name(principal)} is of an unusable type")
    return _Authority(x509.load_pem_x509_certificate(row[0].encode()), key)


def _authority(conn: Conn, passphrase: bytes, principal: str | None,
               now: datetime) -> _Authority:
    """The CA of a principal (None: the root), created with its parents on first need."""
    if len(passphrase) < MIN_PASSPHRASE_BYTES:
        raise PassphraseError(f"the CA passphrase must have at least {MIN_PASSPHRASE_BYTES} bytes")
    found = _load(conn, passphrase, principal)
    if found is not None:
        return found
    with conn.transaction():
        # Two processes may need the same new CA at once; the second one waits and reuses.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"aidlink-ca:{principal}",))
        found = _load(conn, passphrase, principal)
        if found is not None:
            return found
        if principal is not None and conn.execute(
                "SELECT 1 FROM principals WHERE code = %s", (principal,)).fetchone() is None:
            raise NotFoundError(f"principal {principal} does not exist")
        issuer = None if principal is None else _authority(conn, passphrase, None, now)
        key = ec.generate_private_key(ec.SECP384R1())
        cert = _ca_certificate(key, issuer, principal, now)
        encrypted = key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(passphrase))
        conn.execute(
            "INSERT INTO certificate_authorities (principal_code, certificate_pem,"
            " encrypted_key_pem, not_after) VALUES (%s, %s, %s, %s)",
            (principal, _pem(cert), encrypted.decode(), cert.not_valid_after_utc),
        )
    return _Authority(cert, key)


def _key_usage(**allowed: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment",
                           "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
                           "encipher_only", "decipher_only"), False)
    return x509.KeyUsage(**(flags | allowed))


def _skeleton(subject: x509.Name, issuer: x509.Name, public_key: CertificatePublicKeyTypes,
              signer: PrivateKey, not_before: datetime, not_after: datetime
              ) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                       critical=False)
    )


def _ca_certificate(key: PrivateKey, issuer: _Authority | None, principal: str | None,
                    now: datetime) -> x509.Certificate:
    common_name = "aidlink root CA" if issuer is None else f"aidlink principal {principal} CA"
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aidlink"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    if issuer is None:
        signer, issuer_name, not_after = key, name, now + ROOT_LIFETIME
    else:
        signer, issuer_name = issuer.key, issuer.certificate.subject
        not_after = min(now + INTERMEDIATE_LIFETIME, issuer.certificate.not_valid_after_utc)
    builder = (
        _skeleton(name, issuer_name, key.public_key(), signer, now - BACKDATE, not_after)
        # The root signs intermediates and the broker's server certificate; intermediates
        # sign only device certificates.
        .add_extension(x509.BasicConstraints(ca=True, path_length=1 if issuer is None else 0),
                       critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
    )
    return builder.sign(signer, _digest(signer))


def _leaf(ca: _Authority, public_key: CertificatePublicKeyTypes, common_name: str,
          not_before: datetime, not_after: datetime, *, server_names: Sequence[str] = ()
          ) -> x509.Certificate:
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    # RFC 5280 verifiers want the identity in a SAN as well; Mosquitto reads the CN.
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(f"{CLIENT_URN}{common_name}")]
    if server_names:
        names = []
        for host in server_names:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
    builder = (
        _skeleton(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
                  ca.certificate.subject, public_key, ca.key, not_before,
                  min(not_after, ca.certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # RSA key exchange (TLS 1.2 without ECDHE) encrypts to the key; EC keys only sign.
        .add_extension(_key_usage(digital_signature=True,
                                  key_encipherment=isinstance(public_key, rsa.RSAPublicKey)),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
    )
    return builder.sign(ca.key, _digest(ca.key))


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
             actor: str, action: str, now: datetime) -> Issued:
    principal = device["principal_code"]
    policy = current_policy(conn, principal)
    public_key, private_pem = _subject_key(policy, device["id"], csr_pem)
    ca = _authority(conn, passphrase, principal, now)
    cert = _leaf(ca, public_key, device["client_id"], now - BACKDATE,
                 now + timedelta(days=policy.certificate_lifetime_days))
    serial = format(cert.serial_number, "x")
    conn.execute(
        "INSERT INTO certificates (serial, device_id, principal_code, subject_cn, not_before,"
        " not_after, key_algorithm, pem) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (serial, device["id"], principal, device["client_id"], cert.not_valid_before_utc,
         cert.not_valid_after_utc, key_algorithm_of(public_key), _pem(cert)),
    )
    _history(conn, device["id"], action, actor, serial=serial, policy_version=policy.version,
             server_generated_key=private_pem is not None)
    return Issued(_pem(cert), chain_pem(conn, principal), private_pem, serial,
                  cert.not_valid_after_utc)


def issue(conn: Conn, passphrase: bytes, *, device_id: str, principal: str, client_id: str,
          csr_pem: str | bytes | None = None, actor: str = "system",
          now: datetime | None = None) -> Issued:
    """Certify a device (CN = its MQTT client id), revoking earlier ones as superseded."""
    moment = _now(now)
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
          actor: str = "system", now: datetime | None = None) -> Issued:
    """A successor to the device's current certificate, which stays valid until it expires."""
    moment = _now(now)
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
        issued = _certify(conn, passphrase, device, csr_pem, actor, "certificate_renewed", moment)
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
    moment = _now(now)
    device = _device(conn, device_id, retired_ok=True)
    # Checked first, so that a wrong passphrase changes nothing and the next CRL can be signed.
    _authority(conn, passphrase, device["principal_code"], moment)
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


def crl_pem(conn: Conn, passphrase: bytes, principal: str, now: datetime | None = None) -> bytes:
    """A fresh CRL of the principal's intermediate CA listing its unexpired revoked serials."""
    moment = _now(now)
    ca = _authority(conn, passphrase, principal, moment)
    with conn.transaction():
        row = conn.execute(
            "UPDATE certificate_authorities SET crl_number = crl_number + 1, crl_last_update = %s"
            " WHERE principal_code = %s RETURNING crl_number", (moment, principal),
        ).fetchone()
        assert row is not None, "_authority made the CA row"
        revoked = conn.execute(
            "SELECT serial, revoked_at, revocation_reason FROM certificates"
            " WHERE principal_code = %s AND revoked_at IS NOT NULL AND not_after > %s"
            " ORDER BY revoked_at, serial", (principal, moment),
        ).fetchall()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        # A CRL "not yet valid" on a broker whose clock lags would shut out the principal.
        .last_update(moment - BACKDATE)
        .next_update(moment + CRL_LIFETIME)
        .add_extension(x509.CRLNumber(int(row[0])), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                       critical=False)
    )
    for serial, revoked_at, reason in revoked:
        entry = (x509.RevokedCertificateBuilder().serial_number(int(serial, 16))
                 .revocation_date(revoked_at))
        if reason != "unspecified":
            entry = entry.add_extension(x509.CRLReason(x509.ReasonFlags[reason]), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca.key, _digest(ca.key)).public_bytes(serialization.Encoding.PEM)


def _ca_pems(conn: Conn, principal: str | None, *, every: bool = False) -> list[str]:
    rows = conn.execute(
        "SELECT certificate_pem FROM certificate_authorities"
        " WHERE principal_code IS NULL OR principal_code = %s OR %s"
        " ORDER BY principal_code NULLS FIRST", (principal, every),
    ).fetchall()
    return [str(row[0]) for row in rows]


def chain_pem(conn: Conn, principal: str) -> str:
    """The principal's intermediate CA certificate followed by the root's."""
    pems = _ca_pems(conn, principal)
    if len(pems) < 2:
        raise NotFoundError(f"principal {principal} has no intermediate CA yet")
    return "".join(reversed(pems))


def trust_bundle_pem(conn: Conn) -> str:
    """The root and every intermediate: what the broker trusts for client certificates."""
    return "".join(_ca_pems(conn, None, every=True))


def ensure_authorities(conn: Conn, passphrase: bytes, now: datetime | None = None) -> list[str]:
    """Create the intermediate CA of every principal that lacks one; all principals' codes."""
    moment = _now(now)
    codes = [str(row[0]) for row in conn.execute("SELECT code FROM principals ORDER BY code")]
    for code in codes:
        _authority(conn, passphrase, code, moment)
    return codes


def server_certificate(conn: Conn, passphrase: bytes, hosts: Sequence[str],
                       now: datetime | None = None) -> tuple[str, str]:
    """A TLS server certificate from the root for the broker: (certificate PEM, key PEM)."""
    if not hosts:
        raise InvalidInputError("the broker's server certificate needs at least one host name")
    moment = _now(now)
    root = _authority(conn, passphrase, None, moment)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _leaf(root, key.public_key(), hosts[0], moment - BACKDATE, moment + SERVER_LIFETIME,
                 server_names=hosts)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return _pem(cert), private.decode()


def due_for_renewal(conn: Conn, now: datetime | None = None) -> list[dict[str, Any]]:
    """Unexpired, unrevoked current certificates inside their policy's renewal window."""
    moment = _now(now)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT c.device_id, d.client_id, d.principal_code AS principal, c.serial,"
            " c.not_after FROM certificates c JOIN devices d ON d.id = c.device_id"
            " WHERE c.revoked_at IS NULL AND c.replaced_by IS NULL AND d.state <> 'retired'"
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
