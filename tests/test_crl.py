"""A principal's CRL published on its own: ``GET /v1/principals/{code}/crl`` and ``aidlink
principal crl``, over a real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.auth import Role
from gateway.cli import main
from provisioning import pki
from provisioning.ca import CRL_LIFETIME
from tests.support import SECRET, Fleet, api_client, bearer, onboard_over_api, seed

PASSPHRASE = b"crl-test-ca-passphrase-0123456789"
# Principal 2080 requires mutual TLS, so its devices get certificates at onboarding.
TECH_2080 = bearer("2080", Role.TECHNICIAN)
ADMIN_2080 = bearer("2080", Role.ADMIN)
TECH_20 = bearer("20", Role.TECHNICIAN)
ADMIN_20 = bearer("20", Role.ADMIN)
PATH = "/v1/principals/2080/crl"


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed(database_url)


@pytest.fixture
def api(database_url: str, fleet: Fleet) -> Iterator[TestClient]:
    with api_client(database_url, ca_passphrase=PASSPHRASE, rate_limit=None) as client:
        yield client


def _onboard(api: TestClient, serial: str) -> dict[str, Any]:
    return onboard_over_api(api, serial, TECH_2080)


def _revoke(api: TestClient, device_id: str) -> None:
    response = api.post(f"/v1/devices/{device_id}/revoke", json={"reason": "key_compromise"},
                        headers=TECH_2080)
    assert response.status_code == 200, response.text


def _der(api: TestClient, headers: dict[str, str] | None = None) -> x509.CertificateRevocationList:
    response = api.get(PATH, headers=headers or TECH_2080)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pkix-crl"
    return x509.load_der_x509_crl(response.content)


def _number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _serials(crl: x509.CertificateRevocationList) -> set[str]:
    return {format(entry.serial_number, "x") for entry in crl}


def _intermediate(url: str, principal: str = "2080") -> x509.Certificate:
    with psycopg.connect(url) as conn:
        return x509.load_pem_x509_certificates(pki.chain_pem(conn, principal).encode())[0]


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    return crl.issuer == ca.subject and crl.is_signature_valid(
        ca.public_key())  # type: ignore[arg-type]


def test_the_crl_is_signed_by_the_intermediate_and_lists_the_revoked_serial(
        api: TestClient, database_url: str) -> None:
    kept, lost = _onboard(api, "CRL-1"), _onboard(api, "CRL-2")
    _revoke(api, lost["device_id"])
    der = _der(api)
    intermediate = _intermediate(database_url)
    assert _signed_by(der, intermediate)
    assert lost["certificate_serial"] in _serials(der)
    assert kept["certificate_serial"] not in _serials(der)
    entry = der.get_revoked_certificate_by_serial_number(int(lost["certificate_serial"], 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason \
        == x509.ReasonFlags.key_compromise
    pem = api.get(PATH, params={"format": "pem"}, headers=TECH_2080)
    assert pem.status_code == 200, pem.text
    assert pem.headers["content-type"] == "application/x-pem-file"
    assert pem.text.startswith("-----BEGIN X509 CRL-----")
    from_pem = x509.load_pem_x509_crl(pem.content)
    assert _signed_by(from_pem, intermediate)
    # The same CRL in the other encoding, not a second signature.
    assert from_pem == der


def test_fetches_in_a_row_get_the_stored_crl_without_re_signing(
        api: TestClient, database_url: str) -> None:
    _revoke(api, _onboard(api, "CRL-3")["device_id"])
    first, second = _der(api), _der(api, ADMIN_2080)
    assert _number(first) == _number(second)
    assert first == second
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT crl_number, crl_der FROM certificate_authorities"
                           " WHERE principal_code = '2080'").fetchone()
    assert row is not None
    assert (row[0], bytes(row[1])) == (_number(first), first.public_bytes(
        serialization.Encoding.DER))


def test_the_crl_signed_by_a_broker_refresh_is_the_one_served(
        api: TestClient, database_url: str) -> None:
    revoked = _onboard(api, "CRL-4")
    _revoke(api, revoked["device_id"])
    with psycopg.connect(database_url) as conn:
        # What `aidlink broker-config --refresh` signs for each principal.
        refreshed = x509.load_pem_x509_crl(pki.crl_pem(conn, PASSPHRASE, "2080"))
    served = _der(api)
    assert _number(served) == _number(refreshed)
    assert served == refreshed


def test_a_revocation_since_the_stored_crl_gets_a_new_one(api: TestClient) -> None:
    first_lost, second_lost = _onboard(api, "CRL-5"), _onboard(api, "CRL-6")
    _revoke(api, first_lost["device_id"])
    before = _der(api)
    # No broker directory here, so the revocation itself signed no CRL.
    _revoke(api, second_lost["device_id"])
    after = _der(api)
    assert _number(after) == _number(before) + 1
    assert {first_lost["certificate_serial"], second_lost["certificate_serial"]} \
        <= _serials(after)


def test_a_crl_past_half_its_lifetime_is_re_signed(api: TestClient, database_url: str) -> None:
    _revoke(api, _onboard(api, "CRL-7")["device_id"])
    stored = _der(api)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE certificate_authorities SET crl_next_update = %s"
                     " WHERE principal_code = '2080'",
                     (datetime.now(UTC) + CRL_LIFETIME / 2 - timedelta(minutes=1),))
    fresh = _der(api)
    assert _number(fresh) == _number(stored) + 1
    assert fresh.next_update_utc is not None
    assert fresh.next_update_utc - datetime.now(UTC) > CRL_LIFETIME / 2


def test_another_principals_caller_gets_404_and_an_admin_reads_any(
        api: TestClient, database_url: str) -> None:
    _onboard(api, "CRL-8")
    for params in ({}, {"format": "pem"}):
        refused = api.get(PATH, params=params, headers=TECH_20)
        assert refused.status_code == 404, refused.text
        assert refused.json()["detail"] == "principal 2080 does not exist"
    # Admins act for every principal, as on the other routes.
    assert _der(api, ADMIN_20).issuer == _intermediate(database_url).subject
    unknown = api.get("/v1/principals/9999/crl", headers=ADMIN_20)
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "principal 9999 does not exist"
    no_ca = api.get("/v1/principals/20/crl", headers=TECH_20)
    assert no_ca.status_code == 404
    assert no_ca.json()["detail"] == "principal 20 has no intermediate CA yet"
    bad = api.get(PATH, params={"format": "txt"}, headers=TECH_2080)
    assert bad.status_code == 422


def test_without_the_passphrase_the_stored_crl_is_served_and_re_signing_is_503(
        api: TestClient, database_url: str) -> None:
    _revoke(api, _onboard(api, "CRL-9")["device_id"])
    stored = _der(api)
    app = create_app(database_url=database_url, secret=SECRET, rate_limit=None)
    with TestClient(app) as bare:
        assert _number(_der(bare)) == _number(stored)
        _revoke(api, _onboard(api, "CRL-10")["device_id"])
        refused = bare.get(PATH, headers=TECH_2080)
    assert refused.status_code == 503, refused.text
    assert "passphrase" in refused.json()["detail"]


# --- aidlink principal crl ----------------------------------------------------------------


def _env(database_url: str, home: Path) -> dict[str, str]:
    return {"AIDLINK_DATABASE_URL": database_url, "AIDLINK_HOME": str(home),
            "AIDLINK_SECRET": "s" * 40, "AIDLINK_CA_PASSPHRASE": PASSPHRASE.decode()}


def _cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def test_the_command_serves_the_same_crl_as_the_route(
        api: TestClient, database_url: str, tmp_path: Path) -> None:
    kept, lost = _onboard(api, "CRL-11"), _onboard(api, "CRL-12")
    _revoke(api, lost["device_id"])
    served = _der(api)
    env = _env(database_url, tmp_path / "home")
    out = tmp_path / "2080.crl"
    written = _cli(env, "principal", "crl", "2080", "--out", str(out))
    assert written.exit_code == 0, written.output
    from_file = x509.load_der_x509_crl(out.read_bytes())
    assert _signed_by(from_file, _intermediate(database_url))
    assert lost["certificate_serial"] in _serials(from_file)
    assert kept["certificate_serial"] not in _serials(from_file)
    # Served from the store: the route's CRL, not a re-signed one.
    assert from_file == served
    assert f'"crl_number":{_number(served)}' in written.output
    pem = _cli(env, "principal", "crl", "2080", "--pem")
    assert pem.exit_code == 0, pem.output
    assert x509.load_pem_x509_crl(pem.stdout_bytes) == served


def test_the_command_names_an_unknown_principal(database_url: str, fleet: Fleet,
                                                tmp_path: Path) -> None:
    result = _cli(_env(database_url, tmp_path), "principal", "crl", "9999", "--pem")
    assert result.exit_code == 1
    assert "principal 9999 does not exist" in result.output


def test_the_command_refuses_der_on_a_terminal(database_url: str, tmp_path: Path) -> None:
    leader, follower = os.openpty()
    try:
        completed = subprocess.run(
            [sys.executable, "-c", "from gateway.cli import main; main()",
             "principal", "crl", "2080"],
            stdout=follower, stderr=subprocess.PIPE, timeout=60, check=False,
            env={**os.environ, **_env(database_url, tmp_path)})
    finally:
        os.close(follower)
        os.close(leader)
    assert completed.returncode == 2
    assert b"a DER CRL is binary: give --out FILE" in completed.stderr
