"""The certificate authorities: one root CA and an intermediate CA per principal, their
encrypted keys, CRLs, chains and the broker's server certificate (``provisioning.pki`` issues
device certificates under them).

CA keys live in the database only as PKCS#8 encrypted with the caller's passphrase.
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

from provisioning.errors import InvalidInputError, NotFoundError, ProvisioningError

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
class Authority:
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


def now_or(now: datetime | None) -> datetime:
    # Certificates carry whole seconds; the database rows must say the same.
    return (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)


def digest_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def pem_of(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _ca_name(principal: str | None) -> str:
    return "the root CA" if principal is None else f"principal {principal}'s intermediate CA"


def _load(conn: Conn, passphrase: bytes, principal: str | None) -> Authority | None:
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
    return Authority(x509.load_pem_x509_certificate(row[0].encode()), key)


def authority(conn: Conn, passphrase: bytes, principal: str | None,
               now: datetime) -> Authority:
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
        issuer = None if principal is None else authority(conn, passphrase, None, now)
        key = ec.generate_private_key(ec.SECP384R1())
        cert = _ca_certificate(key, issuer, principal, now)
        encrypted = key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(passphrase))
        conn.execute(
            "INSERT INTO certificate_authorities (principal_code, certificate_pem,"
            " encrypted_key_pem, not_after) VALUES (%s, %s, %s, %s)",
            (principal, pem_of(cert), encrypted.decode(), cert.not_valid_after_utc),
        )
    return Authority(cert, key)


def key_usage(**allowed: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment",
                           "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
                           "encipher_only", "decipher_only"), False)
    return x509.KeyUsage(**(flags | allowed))


def skeleton(subject: x509.Name, issuer: x509.Name, public_key: CertificatePublicKeyTypes,
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


def _ca_certificate(key: PrivateKey, issuer: Authority | None, principal: str | None,
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
        skeleton(name, issuer_name, key.public_key(), signer, now - BACKDATE, not_after)
        # The root signs intermediates and the broker's server certificate; intermediates
        # sign only device certificates.
        .add_extension(x509.BasicConstraints(ca=True, path_length=1 if issuer is None else 0),
                       critical=True)
        .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
    )
    return builder.sign(signer, digest_for(signer))


def _sign_crl(conn: Conn, passphrase: bytes, principal: str,
              moment: datetime) -> x509.CertificateRevocationList:
    """Sign the next CRL of the principal's intermediate CA and keep it as the CA's latest."""
    ca = authority(conn, passphrase, principal, moment)
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
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.key.public_key()), critical=False)
        )
        for serial, revoked_at, reason in revoked:
            entry = (x509.RevokedCertificateBuilder().serial_number(int(serial, 16))
                     .revocation_date(revoked_at))
            if reason != "unspecified":
                entry = entry.add_extension(x509.CRLReason(x509.ReasonFlags[reason]),
                                            critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        crl = builder.sign(ca.key, digest_for(ca.key))
        # Kept in the same transaction as the number, so the stored CRL is always the one
        # that carries the CA's latest crl_number.
        conn.execute(
            "UPDATE certificate_authorities SET crl_der = %s, crl_next_update = %s"
            " WHERE principal_code = %s",
            (crl.public_bytes(serialization.Encoding.DER), moment + CRL_LIFETIME, principal),
        )
    return crl


def crl_pem(conn: Conn, passphrase: bytes, principal: str, now: datetime | None = None) -> bytes:
    """A fresh CRL of the principal's intermediate CA listing its unexpired revoked serials."""
    crl = _sign_crl(conn, passphrase, principal, now_or(now))
    return crl.public_bytes(serialization.Encoding.PEM)


def current_crl(conn: Conn, passphrase: bytes | None, principal: str,
                now: datetime | None = None) -> x509.CertificateRevocationList:
    """The principal's CRL as published: the one signed last (at a revocation's broker sync
    or a broker refresh) while it lists every revoked serial and more than half of
    CRL_LIFETIME remains before its next update, else a freshly signed one.

    ``passphrase`` is needed only to sign; without it a CRL that must be re-signed raises
    PassphraseError.
    """
    moment = now_or(now)
    row = conn.execute(
        "SELECT crl_der, crl_next_update FROM certificate_authorities"
        " WHERE principal_code = %s", (principal,),
    ).fetchone()
    if row is None:
        if conn.execute("SELECT 1 FROM principals WHERE code = %s",
                        (principal,)).fetchone() is None:
            raise NotFoundError(f"principal {principal} does not exist")
        raise NotFoundError(f"principal {principal} has no intermediate CA yet")
    stored, next_update = row
    if stored is not None and next_update - moment >= CRL_LIFETIME / 2:
        crl = x509.load_der_x509_crl(bytes(stored))
        listed = {format(entry.serial_number, "x") for entry in crl}
        # Revocations need no CA key (lifecycle revokes without one), so one made since the
        # stored CRL was signed shows only here: a serial the registry revoked that the
        # stored CRL does not list.
        unlisted = conn.execute(
            "SELECT 1 FROM certificates WHERE principal_code = %s AND revoked_at IS NOT NULL"
            " AND not_after > %s AND NOT serial = ANY(%s) LIMIT 1",
            (principal, moment, sorted(listed)),
        ).fetchone()
        if unlisted is None:
            return crl
    if passphrase is None:
        raise PassphraseError(f"principal {principal}'s CRL must be re-signed and the CA"
                              " passphrase is not configured")
    return _sign_crl(conn, passphrase, principal, moment)


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
    """Create the intermediate CA of every principal that lacks one; all principals' codes.

    A principal that has not joined yet gets its CA when it joins (provisioning.participation).
    """
    moment = now_or(now)
    codes = [str(row[0]) for row in conn.execute(
        "SELECT code FROM principals WHERE participates_from IS NOT NULL ORDER BY code")]
    for code in codes:
        authority(conn, passphrase, code, moment)
    return codes


def server_certificate(conn: Conn, passphrase: bytes, hosts: Sequence[str],
                       now: datetime | None = None) -> tuple[str, str]:
    """A TLS server certificate from the root for the broker: (certificate PEM, key PEM)."""
    if not hosts:
        raise InvalidInputError("the broker's server certificate needs at least one host name")
    moment = now_or(now)
    root = authority(conn, passphrase, None, moment)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = leaf(root, key.public_key(), hosts[0], moment - BACKDATE, moment + SERVER_LIFETIME,
                 server_names=hosts)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return pem_of(cert), private.decode()

def leaf(ca: Authority, public_key: CertificatePublicKeyTypes, common_name: str,
          not_before: datetime, not_after: datetime, *, server_names: Sequence[str] = ()
          ) -> x509.Certificate:
    """A leaf certificate (a device's, or with ``server_names`` the broker's) signed by ``ca``."""
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
        skeleton(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
                  ca.certificate.subject, public_key, ca.key, not_before,
                  min(not_after, ca.certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # RSA key exchange (TLS 1.2 without ECDHE) encrypts to the key; EC keys only sign.
        .add_extension(key_usage(digital_signature=True,
                                  key_encipherment=isinstance(public_key, rsa.RSAPublicKey)),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
    )
    return builder.sign(ca.key, digest_for(ca.key))

