"""The PKI against a real PostgreSQL: CAs, encrypted keys, issuance, renewal, revocation, CRLs."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from gateway import db
from provisioning import pki, service
from provisioning.errors import ConflictError, InvalidInputError, NotFoundError
from provisioning.policy import PolicyError, set_policy

Conn = psycopg.Connection[Any]
PASSPHRASE = secrets.token_urlsafe(24).encode()


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    """A migrated database with Region Dalarna and Falun."""
    db.migrate(database_url)
    with psycopg.connect(database_url, autocommit=True) as connection:
        service.add_principal(connection, "20", "Region Dalarna")
        service.add_principal(connection, "2080", "Falun")
        yield connection


def onboard(conn: Conn, principal: str, serial: str) -> str:
    """Onboard one device; its id (which is also its client id)."""
    row = service.onboard_device(conn, principal=principal, model="sim-bpm", serial=serial,
                                 actor="tech-1")
    return str(row["device_id"])


def issue(conn: Conn, device: str, principal: str = "20", **options: Any) -> pki.Issued:
    """Issue a certificate for a device of a principal."""
    return pki.issue(conn, PASSPHRASE, device_id=device, principal=principal, client_id=device,
                     **options)


def csr_for(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    """A CSR as a device makes it: its own name and a (bogus) request to be a CA."""
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "factory-name")]))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())


def certs(pem: str) -> list[x509.Certificate]:
    """The certificates of a PEM bundle, in order."""
    return x509.load_pem_x509_certificates(pem.encode())


def extensions(cert: x509.Certificate) -> dict[str, Any]:
    """A certificate's extensions by name, critical flag first."""
    return {ext.oid._name: (ext.critical, ext.value) for ext in cert.extensions}


def test_one_root_and_one_intermediate_per_principal_made_on_first_need(conn: Conn) -> None:
    first, second = onboard(conn, "20", "A"), onboard(conn, "20", "B")
    falun = onboard(conn, "2080", "C")
    issued = [issue(conn, first), issue(conn, second), issue(conn, falun, "2080")]
    rows = conn.execute("SELECT principal_code FROM certificate_authorities"
                        " ORDER BY principal_code NULLS FIRST").fetchall()
    assert rows == [(None,), ("20",), ("2080",)]
    intermediate, root = certs(pki.chain_pem(conn, "20"))
    assert [c.subject.rfc4514_string() for c in (intermediate, root)] == [
        "CN=aidlink principal 20 CA,O=aidlink", "CN=aidlink root CA,O=aidlink"]
    assert intermediate.issuer == root.subject == root.issuer
    assert [i.chain_pem for i in issued] == [pki.chain_pem(conn, "20")] * 2 + [
        pki.chain_pem(conn, "2080")]
    assert [c.subject for c in certs(pki.trust_bundle_pem(conn))] == [
        root.subject, intermediate.subject, certs(pki.chain_pem(conn, "2080"))[0].subject]
    with pytest.raises(NotFoundError, match=r"^principal 2021 has no intermediate CA yet$"):
        service.add_principal(conn, "2021", "Vansbro")
        pki.chain_pem(conn, "2021")


def test_ca_keys_are_encrypted_at_rest_and_need_the_passphrase(conn: Conn) -> None:
    device = onboard(conn, "20", "A")
    issue(conn, device)
    stored = [str(row[0]) for row in conn.execute(
        "SELECT encrypted_key_pem FROM certificate_authorities")]
    assert len(stored) == 2
    for pem in stored:
        assert pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
        with pytest.raises(TypeError, match=r"private key is encrypted"):
            serialization.load_pem_private_key(pem.encode(), None)
        assert isinstance(serialization.load_pem_private_key(pem.encode(), PASSPHRASE),
                          ec.EllipticCurvePrivateKey)
    wrong = b"not-the-passphrase-at-all"
    with pytest.raises(pki.PassphraseError) as caught:
        pki.issue(conn, wrong, device_id=device, principal="20", client_id=device)
    assert str(caught.value) == ("the key of principal 20's intermediate CA could not be"
                                 " decrypted: wrong CA passphrase")
    falun = onboard(conn, "2080", "B")
    # Falun has no intermediate yet, so making one needs the root's key.
    with pytest.raises(pki.PassphraseError, match=r"^the key of the root CA could not be"):
        pki.issue(conn, wrong, device_id=falun, principal="2080", client_id=falun)
    with pytest.raises(pki.PassphraseError, match=r"^the CA passphrase must have at least 16"):
        pki.crl_pem(conn, b"short", "20")
    # The schema refuses a clear key whatever the code does.
    clear = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE certificate_authorities SET encrypted_key_pem = %s", (clear,))


def test_a_csr_is_certified_with_the_client_id_and_the_server_keeps_no_key(conn: Conn) -> None:
    device = onboard(conn, "20", "A")
    key = ec.generate_private_key(ec.SECP256R1())
    issued = issue(conn, device, csr_pem=csr_for(key))
    (cert,) = certs(issued.certificate_pem)
    intermediate, root = certs(issued.chain_pem)
    assert issued.private_key_pem is None
    assert cert.public_key() == key.public_key()
    assert cert.subject.rfc4514_string() == f"CN={device}"
    assert (issued.serial, issued.not_after) == (format(cert.serial_number, "x"),
                                                 cert.not_valid_after_utc)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=365, minutes=5)
    assert extensions(cert) == {
        "basicConstraints": (True, x509.BasicConstraints(ca=False, path_length=None)),
        "keyUsage": (True, x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False)),
        "extendedKeyUsage": (False, x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])),
        "subjectKeyIdentifier": (False, x509.SubjectKeyIdentifier.from_public_key(
            key.public_key())),
        "authorityKeyIdentifier": (False, x509.AuthorityKeyIdentifier.from_issuer_public_key(
            intermediate.public_key())),  # type: ignore[arg-type]
        "subjectAltName": (False, x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"urn:aidlink:client:{device}")])),
    }
    verifier = PolicyBuilder().store(Store([root])).build_client_verifier()
    assert verifier.verify(cert, [intermediate]).chain == [cert, intermediate, root]
    # The signatures are checked: another principal's intermediate does not lead to the root.
    issue(conn, onboard(conn, "2080", "B"), "2080")
    with pytest.raises(VerificationError):
        verifier.verify(cert, certs(pki.chain_pem(conn, "2080"))[:1])
    row = conn.execute("SELECT subject_cn, key_algorithm, pem FROM certificates"
                       " WHERE device_id = %s", (device,)).fetchall()
    assert row == [(device, "EC-P256", issued.certificate_pem)]
    columns = {str(r[0]) for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'certificates'")}
    assert {c for c in columns if "key" in c} == {"key_algorithm"}


def test_a_generated_key_is_returned_once_and_never_stored(conn: Conn) -> None:
    set_policy(conn, "20", {"key_algorithm": "RSA-2048"}, "tech-1")
    device = onboard(conn, "20", "A")
    issued = issue(conn, device)
    assert issued.private_key_pem is not None
    assert issued.private_key_pem.startswith("-----BEGIN PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(issued.private_key_pem.encode(), None)
    (cert,) = certs(issued.certificate_pem)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert (key.key_size, cert.public_key()) == (2048, key.public_key())
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (usage.digital_signature, usage.key_encipherment) == (True, True)
    body = issued.private_key_pem.splitlines()[1]
    dump = conn.execute("SELECT string_agg(t::text, '') FROM (SELECT * FROM certificates) t"
                        " UNION ALL SELECT string_agg(h::text, '') FROM device_history h"
                        ).fetchall()
    assert all(body not in str(text) for (text,) in dump)


@pytest.mark.parametrize(("key", "algorithm"), [
    (ec.generate_private_key(ec.SECP256R1()), "EC-P256"),
    (rsa.generate_private_key(public_exponent=65537, key_size=1024),  # noqa: S505 - refused
     "RSA-1024"),
])
def test_a_csr_key_the_policy_does_not_allow_is_refused_naming_the_rule(
        conn: Conn, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, algorithm: str) -> None:
    set_policy(conn, "20", {"key_algorithm": "EC-P384"}, "tech-1")
    device = onboard(conn, "20", "A")
    with pytest.raises(PolicyError) as caught:
        issue(conn, device, csr_pem=csr_for(key))
    assert str(caught.value) == (f"the CSR for device {device} has an {algorithm} key, which"
                                 " principal 20's policy v1 does not allow (key_algorithm:"
                                 " EC-P384)")
    assert conn.execute("SELECT count(*) FROM certificates").fetchone() == (0,)


def test_a_bad_csr_or_a_wrong_device_is_refused(conn: Conn) -> None:
    device, other = onboard(conn, "20", "A"), onboard(conn, "2080", "B")
    der = bytearray(x509.load_pem_x509_csr(csr_for(ec.generate_private_key(ec.SECP256R1()))
                                           .encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(InvalidInputError, match=rf"^the CSR for device {device} is not signed"
                       " by its own key$"):
        issue(conn, device, csr_pem=tampered)
    with pytest.raises(InvalidInputError, match=r"is not a PEM certificate signing request$"):
        issue(conn, device, csr_pem="-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n")
    with pytest.raises(ConflictError) as caught:
        issue(conn, other, "20")
    assert str(caught.value) == (f"device {other} is client {other} of principal 2080, not"
                                 f" client {other} of 20")
    conn.execute("UPDATE devices SET state = 'retired' WHERE id = %s", (device,))
    with pytest.raises(ConflictError, match=rf"^device {device} is retired; it gets no"):
        issue(conn, device)


def test_renewal_replaces_the_certificate_but_not_for_a_revoked_device(conn: Conn) -> None:
    device = onboard(conn, "20", "A")
    first = issue(conn, device)
    second = pki.renew(conn, PASSPHRASE, device_id=device,
                       csr_pem=csr_for(ec.generate_private_key(ec.SECP256R1())))
    rows = conn.execute("SELECT serial, replaced_by, revoked_at FROM certificates"
                        " ORDER BY issued_at, serial").fetchall()
    assert sorted(rows, key=str) == sorted([(first.serial, second.serial, None),
                                            (second.serial, None, None)], key=str)
    assert second.private_key_pem is None
    revoked = pki.revoke(conn, PASSPHRASE, device, "key_compromise", "tech-1")
    assert revoked == {"device_id": device, "principal": "20",
                       "serials": sorted([first.serial, second.serial]),
                       "password_revoked": False, "reason": "key_compromise",
                       "revoked_at": revoked["revoked_at"]}
    with pytest.raises(ConflictError) as caught:
        pki.renew(conn, PASSPHRASE, device_id=device)
    assert str(caught.value) == (f"device {device} is revoked (certificate {second.serial},"
                                 " key_compromise); a revoked device is not renewed")
    with pytest.raises(NotFoundError, match=r"has no certificate or password to revoke$"):
        pki.revoke(conn, PASSPHRASE, device, "superseded", "tech-1")
    assert pki.revoke(conn, PASSPHRASE, device, "superseded", "tech-1",
                      missing_ok=True)["serials"] == []
    with pytest.raises(InvalidInputError, match=r"^revocation reason 'lost' is not one of"):
        pki.revoke(conn, PASSPHRASE, device, "lost", "tech-1")
    expired = onboard(conn, "20", "B")
    old = issue(conn, expired, now=datetime.now(UTC) - timedelta(days=400))
    with pytest.raises(ConflictError, match=rf"^certificate {old.serial} of device {expired}"
                       " expired at "):
        pki.renew(conn, PASSPHRASE, device_id=expired)


def test_a_new_issue_revokes_the_earlier_certificate_as_superseded(conn: Conn) -> None:
    device = onboard(conn, "20", "A")
    first, second = issue(conn, device), issue(conn, device)
    rows = conn.execute("SELECT serial, replaced_by, revocation_reason FROM certificates"
                        " WHERE serial = %s", (first.serial,)).fetchall()
    assert rows == [(first.serial, second.serial, "superseded")]


def test_the_crl_lists_the_principals_revoked_serials_signed_by_its_ca(conn: Conn) -> None:
    kept, lost = onboard(conn, "20", "A"), onboard(conn, "20", "B")
    falun = onboard(conn, "2080", "C")
    issue(conn, kept)
    revoked = issue(conn, lost)
    falun_serial = issue(conn, falun, "2080").serial
    pki.revoke(conn, PASSPHRASE, lost, "key_compromise", "tech-1")
    pki.revoke(conn, PASSPHRASE, falun, "unspecified", "tech-1")
    first = x509.load_pem_x509_crl(pki.crl_pem(conn, PASSPHRASE, "20"))
    second = x509.load_pem_x509_crl(pki.crl_pem(conn, PASSPHRASE, "20"))
    intermediate = certs(pki.chain_pem(conn, "20"))[0]
    assert second.is_signature_valid(intermediate.public_key())  # type: ignore[arg-type]
    assert second.issuer == intermediate.subject
    assert [(format(r.serial_number, "x"),
             r.extensions.get_extension_for_class(x509.CRLReason).value.reason)
            for r in second] == [(revoked.serial, x509.ReasonFlags.key_compromise)]
    numbers = [crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
               for crl in (first, second)]
    assert numbers == [1, 2]
    # Backdated a little, for a broker whose clock lags; valid for a week.
    assert second.next_update_utc - second.last_update_utc == timedelta(  # type: ignore[operator]
        days=7, minutes=5)
    falun_crl = x509.load_pem_x509_crl(pki.crl_pem(conn, PASSPHRASE, "2080"))
    assert [(format(r.serial_number, "x"), list(r.extensions)) for r in falun_crl] == [
        (falun_serial, [])]


def test_due_for_renewal_follows_each_principals_policy(conn: Conn) -> None:
    set_policy(conn, "2080", {"renew_before_days": 60}, "tech-1")
    now = datetime.now(UTC)
    fresh, due = onboard(conn, "20", "A"), onboard(conn, "20", "B")
    falun = onboard(conn, "2080", "C")
    issue(conn, fresh)
    late = issue(conn, due, now=now - timedelta(days=340))
    falun_cert = issue(conn, falun, "2080", now=now - timedelta(days=310))
    issue(conn, onboard(conn, "20", "D"), now=now - timedelta(days=400))  # expired: not renewable
    assert pki.due_for_renewal(conn, now) == [
        {"device_id": due, "client_id": due, "principal": "20", "serial": late.serial,
         "not_after": late.not_after, "renew_from": late.not_after - timedelta(days=30)},
        {"device_id": falun, "client_id": falun, "principal": "2080",
         "serial": falun_cert.serial, "not_after": falun_cert.not_after,
         "renew_from": falun_cert.not_after - timedelta(days=60)},
    ]
