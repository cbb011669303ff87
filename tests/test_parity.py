"""Every provisioning capability has a command and a route: the routes of ``device renew``,
``policy show --history`` and ``client …``, and the commands of the device, export,
traceability and licence-end routes, over a real PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient

from gateway.auth import Role
from gateway.cli import main
from provisioning import licences, lifecycle, reports
from tests.support import Fleet, api_client, bearer, onboard_over_api, seed

PASSPHRASE = b"parity-test-ca-passphrase-0123"
# Principal 20 gives devices passwords; principal 2080 requires mutual TLS.
TECH_20 = bearer("20", Role.TECHNICIAN)
TECH_2080 = bearer("2080", Role.TECHNICIAN)
ADMIN_20 = bearer("20", Role.ADMIN)
ADMIN_2080 = bearer("2080", Role.ADMIN)


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed(database_url)


@pytest.fixture
def api(database_url: str, fleet: Fleet) -> Iterator[TestClient]:
    with api_client(database_url, ca_passphrase=PASSPHRASE, rate_limit=None) as client:
        yield client


def _onboard(api: TestClient, serial: str) -> dict[str, Any]:
    return onboard_over_api(api, serial, TECH_2080)


def _expire_soon(url: str, device: str, days: int) -> None:
    """Bring the device's certificate inside its renewal window (30 days by default)."""
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE certificates SET not_after = now() + make_interval(days => %s)"
                     " WHERE device_id = %s", (days, device))


def _public_key(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- POST /v1/devices/{id}/renew ----------------------------------------------------------


def test_renew_certifies_the_devices_key_again_or_a_new_one(api: TestClient) -> None:
    device = _onboard(api, "R-1")
    path = f"/v1/devices/{device['device_id']}/renew"
    kept = api.post(path, headers=TECH_2080)
    assert kept.status_code == 200, kept.text
    body = kept.json()
    assert body["device_id"] == device["device_id"]
    assert body["certificate_serial"] != device["certificate_serial"]
    assert "private_key_pem" not in body and "BEGIN CERTIFICATE" in body["ca_chain_pem"]
    assert _public_key(body["certificate_pem"]) == _public_key(device["certificate_pem"])
    fresh = api.post(path, json={"new_key": True}, headers=TECH_2080)
    assert fresh.status_code == 200, fresh.text
    assert "PRIVATE KEY" in fresh.json()["private_key_pem"]
    assert _public_key(fresh.json()["certificate_pem"]) != _public_key(device["certificate_pem"])


def test_renew_names_what_is_wrong(api: TestClient, fleet: Fleet) -> None:
    device = _onboard(api, "R-2")["device_id"]
    both = api.post(f"/v1/devices/{device}/renew", json={"csr_pem": "x", "new_key": True},
                    headers=TECH_2080)
    assert both.status_code == 422
    assert both.json()["detail"] == "body: give csr_pem or new_key, not both"
    bad = api.post(f"/v1/devices/{device}/renew", json={"csr_pem": "not a csr"},
                   headers=TECH_2080)
    assert bad.status_code == 422
    assert bad.json()["detail"] == (f"the CSR for device {device} is not a PEM certificate"
                                    " signing request")
    # A device of principal 20 holds only a password: nothing to renew.
    none = api.post(f"/v1/devices/{fleet.hub}/renew", headers=TECH_20)
    assert none.status_code == 404
    assert none.json()["detail"] == f"device {fleet.hub} has no certificate to renew"
    # Another principal's device is as unknown as a missing one.
    other = api.post(f"/v1/devices/{device}/renew", headers=TECH_20)
    assert other.status_code == 404
    assert other.json()["detail"] == f"device {device} not found"


# --- POST /v1/devices/renew-due -----------------------------------------------------------


def test_renew_due_renews_what_it_may_and_lists_each_refusal_with_its_rule(
        api: TestClient, database_url: str) -> None:
    old_key = _onboard(api, "D-1")["device_id"]
    policy = api.put("/v1/policy", json={"key_algorithm": "EC-P384"}, headers=ADMIN_2080)
    assert policy.status_code == 200, policy.text
    new_key = _onboard(api, "D-2")
    not_due = _onboard(api, "D-3")["device_id"]
    # The refused one comes first, so the renewal goes on past a refusal.
    _expire_soon(database_url, old_key, 2)
    _expire_soon(database_url, new_key["device_id"], 3)
    response = api.post("/v1/devices/renew-due", headers=TECH_2080)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["principal"] == "2080"
    assert [r["device_id"] for r in body["renewed"]] == [new_key["device_id"]]
    assert body["renewed"][0]["replaces"] == new_key["certificate_serial"]
    assert [r["device_id"] for r in body["refused"]] == [old_key]
    assert "key_algorithm: EC-P384" in body["refused"][0]["reason"]
    assert not_due not in response.text
    # What was renewed is no longer due; the refused one still is.
    again = api.post("/v1/devices/renew-due", headers=ADMIN_2080).json()
    assert again["renewed"] == [] and [r["device_id"] for r in again["refused"]] == [old_key]


def test_renew_due_refuses_a_device_below_the_minimum_firmware_naming_the_rule(
        api: TestClient, database_url: str) -> None:
    devices = {}
    for serial, firmware in (("FW-1", "1.0.0"), ("FW-2", "2.1")):
        response = api.post("/v1/devices", json={"model": "bpm", "serial": serial,
                                                  "firmware": firmware}, headers=TECH_2080)
        assert response.status_code == 201, response.text
        devices[firmware] = response.json()["device_id"]
    policy = api.put("/v1/policy", json={"min_firmware": {"bpm": "2.0"}}, headers=ADMIN_2080)
    assert policy.status_code == 200, policy.text
    version = policy.json()["version"]
    for device in devices.values():
        _expire_soon(database_url, device, 5)
    response = api.post("/v1/devices/renew-due", headers=TECH_2080)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["device_id"] for r in body["renewed"]] == [devices["2.1"]]
    assert sorted(body["renewed"][0]) == ["device_id", "not_after", "replaces", "serial"]
    assert [(r["device_id"], r["reason"]) for r in body["refused"]] == [
        (devices["1.0.0"], f"not renewed: firmware 1.0.0 of bpm is below the minimum 2.0"
                           f" (policy v{version})")]
    with psycopg.connect(database_url) as conn:
        renewed = conn.execute("SELECT count(*) FROM device_history WHERE device_id = %s"
                               " AND action = 'certificate_renewed'",
                               (devices["1.0.0"],)).fetchone()
    assert renewed == (0,)


def test_renew_due_is_the_callers_principals(api: TestClient) -> None:
    refused = api.post("/v1/devices/renew-due", params={"principal": "20"}, headers=TECH_2080)
    assert refused.status_code == 403
    assert refused.json()["detail"] == ("a technician of principal 2080 may not act for"
                                        " principal 20")
    unknown = api.post("/v1/devices/renew-due", params={"principal": "9999"},
                       headers=ADMIN_2080)
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "principal 9999 does not exist"
    clinician = api.post("/v1/devices/renew-due", headers=bearer("2080"))
    assert clinician.status_code == 403


# --- GET /v1/policy/history ---------------------------------------------------------------


def test_policy_history_lists_every_version_oldest_first(api: TestClient) -> None:
    for days in (20, 25):
        stored = api.put("/v1/policy", json={"renew_before_days": days}, headers=ADMIN_2080)
        assert stored.status_code == 200, stored.text
    response = api.get("/v1/policy/history", headers=TECH_2080)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["principal"] == "2080"
    assert [item["version"] for item in body["items"]] == [1, 2]
    assert [item["document"]["renew_before_days"] for item in body["items"]] == [20, 25]
    assert api.get("/v1/policy/history", params={"principal": "20"},
                   headers=TECH_2080).status_code == 403
    as_admin = api.get("/v1/policy/history", params={"principal": "2080"}, headers=ADMIN_20)
    assert [item["version"] for item in as_admin.json()["items"]] == [1, 2]


# --- /v1/clients --------------------------------------------------------------------------


def test_an_admin_adds_lists_and_disables_its_principals_clients(api: TestClient) -> None:
    added = api.post("/v1/clients", json={"role": "clinician", "name": "Falun EHR"},
                     headers=ADMIN_2080)
    assert added.status_code == 201, added.text
    client = added.json()
    assert client["principal"] == "2080" and client["role"] == "clinician"
    assert client["client_id"].startswith("ac-") and len(client["client_secret"]) > 30
    token = api.post("/oauth/token", data={"grant_type": "client_credentials"},
                     auth=(client["client_id"], client["client_secret"]))
    assert token.status_code == 200, token.text
    listed = api.get("/v1/clients", headers=ADMIN_2080)
    assert listed.status_code == 200
    assert [c["client_id"] for c in listed.json()["items"]] == [client["client_id"]]
    assert "client_secret" not in listed.text and "scrypt" not in listed.text
    assert api.get("/v1/clients", headers=ADMIN_20).json()["items"] == []
    # Another principal's admin finds no such client, and changes nothing.
    other = api.post(f"/v1/clients/{client['client_id']}/disable", headers=ADMIN_20)
    assert other.status_code == 404
    assert other.json()["detail"] == f"client {client['client_id']} not found"
    disabled = api.post(f"/v1/clients/{client['client_id']}/disable", headers=ADMIN_2080)
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["disabled_at"] is not None
    twice = api.post(f"/v1/clients/{client['client_id']}/disable", headers=ADMIN_2080)
    assert twice.status_code == 409
    assert twice.json()["detail"].startswith(f"client {client['client_id']} was already"
                                             " disabled at ")
    refused = api.post("/oauth/token", data={"grant_type": "client_credentials"},
                       auth=(client["client_id"], client["client_secret"]))
    assert refused.status_code in (400, 401)


def test_clients_are_for_admins_and_bad_input_is_named(api: TestClient) -> None:
    for method, path in (("GET", "/v1/clients"), ("POST", "/v1/clients/ac-x/disable")):
        response = api.request(method, path, headers=TECH_2080)
        assert response.status_code == 403
        assert response.json()["detail"] == "only an admin may do this, not a technician"
    wrong_scope = api.post("/v1/clients", json={"role": "clinician", "name": "X",
                                                "scopes": ["provisioning"]},
                           headers=ADMIN_2080)
    assert wrong_scope.status_code == 422
    assert wrong_scope.json()["detail"].startswith("scope provisioning is of no use to role"
                                                   " clinician")
    control = api.post("/v1/clients", json={"role": "clinician", "name": "EHR\x00"},
                       headers=ADMIN_2080)
    assert control.status_code == 422
    assert control.json()["detail"].startswith("body.name: ")
    foreign = api.post("/v1/clients", json={"role": "clinician", "name": "X",
                                            "principal": "20"}, headers=ADMIN_2080)
    assert foreign.status_code == 422
    assert foreign.json()["detail"].startswith("body.principal: ")


# --- the commands -------------------------------------------------------------------------


class Cli:
    """The command line against one database (no broker: these commands need none)."""

    def __init__(self, url: str, home: Path) -> None:
        self.env = {"AIDLINK_DATABASE_URL": url, "AIDLINK_HOME": str(home),
                    "AIDLINK_SECRET": "s" * 40,
                    "AIDLINK_CA_PASSPHRASE": PASSPHRASE.decode()}

    def run(self, *args: str, code: int = 0) -> Result:
        result = CliRunner().invoke(main, list(args), env=self.env)
        assert result.exit_code == code, result.output
        return result

    def lines(self, *args: str, code: int = 0) -> list[Any]:
        return [json.loads(line) for line in self.run(*args, code=code).stdout.splitlines()]


@pytest.fixture
def cli(database_url: str, fleet: Fleet, tmp_path: Path) -> Cli:
    return Cli(database_url, tmp_path / "home")


def test_device_show_prints_what_the_route_answers(cli: Cli, api: TestClient,
                                                   fleet: Fleet) -> None:
    [shown] = cli.lines("device", "show", fleet.cuff)
    answered = api.get(f"/v1/devices/{fleet.cuff}", headers=TECH_20).json()
    assert shown == answered
    assert shown["principal"] == "20" and shown["serial"] == "C1"
    missing = cli.run("device", "show", "no-such-device", code=1)
    assert missing.stderr == "aidlink: device no-such-device does not exist\n"


def test_device_history_by_owner_splits_a_transferred_devices_life(
        cli: Cli, database_url: str, fleet: Fleet) -> None:
    with psycopg.connect(database_url) as conn:
        lifecycle.transfer(conn, device_id=fleet.unpaired, to_principal="2080", actor="t",
                           reason="moved to Falun")
    parts = cli.lines("device", "history", fleet.unpaired, "--by-owner")
    assert [part["principal"] for part in parts] == ["20", "2080"]
    everything = cli.lines("device", "history", fleet.unpaired)
    assert len(everything) == sum(len(part["history"]) for part in parts)
    assert parts[0]["history"][0]["action"] == "onboarded"
    assert all(e["device_id"] == fleet.unpaired for p in parts for e in p["history"])


def test_export_and_traceability_round_trip_through_csv(cli: Cli, database_url: str,
                                                        fleet: Fleet, tmp_path: Path) -> None:
    with psycopg.connect(database_url) as conn:
        licences.add_vendor(conn, code="acme", name="Acme")
        licences.add_product(conn, article_number="123456", name="Cuff",
                             product_class="bpm", vendor="acme")
        expected_csv = reports.devices_csv(conn, principal="20")
    exported_csv = cli.run("device", "export", "--principal", "20", "--csv").stdout_bytes
    assert exported_csv == expected_csv.encode()
    source = tmp_path / "sesam.csv"
    source.write_text(f"device_id,article_number,individual_number\n{fleet.cuff},123456,77\n")
    assert cli.lines("device", "traceability", str(source)) == [{"lines": 1, "changed": 1}]
    rows = {row["device_id"]: row for row in cli.lines("device", "export")}
    assert rows[fleet.cuff]["article_number"] == "123456"
    assert rows[fleet.cuff]["individual_number"] == "77"
    assert rows[fleet.other_cuff]["principal"] == "2080"
    assert rows[fleet.hub]["article_number"] is None
    # The CSV export reads back as the same devices.
    exported = list(csv.DictReader(io.StringIO(cli.run("device", "export", "--csv").stdout)))
    assert {row["device_id"] for row in exported} == set(rows)
    source.write_text("device_id,article_number,individual_number\nno-such,123456,78\n")
    refused = cli.run("device", "traceability", str(source), code=1)
    assert refused.stderr == ("aidlink: line 2, column device_id: device no-such does not"
                              " exist\n")
    unknown = cli.run("device", "export", "--principal", "9999", code=1)
    assert unknown.stderr == "aidlink: principal 9999 does not exist\n"


def test_licence_end_sets_the_last_day(cli: Cli, database_url: str, fleet: Fleet) -> None:
    with psycopg.connect(database_url) as conn:
        licences.add_vendor(conn, code="acme", name="Acme")
        licences.add_product(conn, article_number="123456", name="Cuff",
                             product_class="bpm", vendor="acme")
        licences.add_terms(conn, code="cuff-monthly", article_number="123456",
                           period="monthly", price=Decimal("300"), device_included=True,
                           acquisition="rent", device_price=None)
        licences.set_traceability(conn, device_id=fleet.cuff, article_number="123456",
                                  individual_number="1", actor="t")
        licence = licences.start_licence(conn, device_id=fleet.cuff, terms="cuff-monthly",
                                         start_date=date(2026, 3, 16), actor="t")
    [ended] = cli.lines("licence", "end", str(licence["id"]), "--on", "2026-12-31",
                        "--reason", "patient moved")
    assert ended["id"] == licence["id"] and ended["end_date"] == "2026-12-31"
    [today] = cli.lines("licence", "end", str(licence["id"]), "--reason", "ends now")
    assert today["end_date"] == date.today().isoformat()
    early = cli.run("licence", "end", str(licence["id"]), "--on", "2026-01-01",
                    "--reason", "x", code=1)
    assert early.stderr == (f"aidlink: licence {licence['id']}: end date 2026-01-01 is before"
                            " its start date 2026-03-16\n")
    missing = cli.run("licence", "end", "999999", "--reason", "x", code=1)
    assert missing.stderr == "aidlink: licence 999999 does not exist\n"
    with psycopg.connect(database_url) as conn:
        actions = [r[0] for r in conn.execute(
            "SELECT detail->>'reason' FROM device_history WHERE device_id = %s"
            " AND action = 'licence_ended' ORDER BY id", (fleet.cuff,))]
    assert actions == ["patient moved", "ends now"]


def test_renew_due_lists_each_refusal_and_goes_on(cli: Cli, database_url: str) -> None:
    old_key = cli.lines("device", "onboard", "--principal", "2080", "--model", "bpm",
                        "--serial", "CD-1")[0]["device_id"]
    cli.run("policy", "set", "2080", "--set", "key_algorithm=EC-P384")
    new_key = cli.lines("device", "onboard", "--principal", "2080", "--model", "bpm",
                        "--serial", "CD-2")[0]["device_id"]
    _expire_soon(database_url, old_key, 2)
    _expire_soon(database_url, new_key, 3)
    result = cli.run("device", "renew", "--due", code=1)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["device_id"] for line in lines] == [old_key, new_key]
    assert "key_algorithm: EC-P384" in lines[0]["refused"]
    assert "certificate_serial" in lines[1] and "refused" not in lines[1]
    assert result.stderr == ("aidlink: 1 of 2 due certificate(s) refused renewal"
                             " (listed above)\n")
    # Only the refused one is still due; another principal has none.
    assert [line["device_id"] for line in cli.lines("device", "renew", "--due",
                                                    "--principal", "2080", code=1)] == [old_key]
    assert cli.run("device", "renew", "--due", "--principal", "20").stdout == ""
    both = cli.run("device", "renew", "--due", "--csr", __file__, code=2)
    assert both.stderr == ("aidlink: --csr certifies one device's key: give a DEVICE with it,"
                           " not --due\n")
