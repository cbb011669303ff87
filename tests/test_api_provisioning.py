"""The provisioning API over a real PostgreSQL: onboarding, scoping, roles, lifecycle, policy,
reports."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.auth import Role
from tests.support import SECRET, Fleet, bearer, count, seed

PASSPHRASE = b"p" * 24
# Principal 20 gives devices passwords; principal 2080 requires mutual TLS.
TECH_20 = bearer("20", Role.TECHNICIAN)
TECH_2080 = bearer("2080", Role.TECHNICIAN)
ADMIN = bearer("20", Role.ADMIN)


def _app(database_url: str, passphrase: bytes | None) -> FastAPI:
    return create_app(database_url=database_url, secret=SECRET, ca_passphrase=passphrase)


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed(database_url)


@pytest.fixture
def client(database_url: str, fleet: Fleet) -> Iterator[TestClient]:
    with TestClient(_app(database_url, PASSPHRASE)) as api:
        yield api


def _device_routes(device: str, hub: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every device route with a valid body, so only authorisation can refuse it."""
    base = f"/v1/devices/{device}"
    return [
        ("GET", base, None),
        ("GET", f"{base}/history?by_owner=true", None),
        ("POST", f"{base}/pair", {"hub": hub}),
        ("POST", f"{base}/assign", {"patient": "p-1", "basis": "HSL"}),
        ("POST", f"{base}/return", {"reason": "broken"}),
        ("POST", f"{base}/recondition", {"reason": "returned"}),
        ("POST", f"{base}/recondition/confirm",
         {"nonce": "x", "confirmed_at": "2026-11-01T08:00:00Z"}),
        ("POST", f"{base}/recondition/finish", None),
        ("POST", f"{base}/retire", {"reason": "worn out"}),
        ("POST", f"{base}/revoke", {"reason": "key_compromise"}),
    ]


def test_mtls_onboarding_returns_a_certificate_named_by_the_client_id(
        client: TestClient) -> None:
    response = client.post("/v1/devices", json={"model": "bpm", "serial": "N1"},
                           headers=TECH_2080)
    assert response.status_code == 201, response.text
    body = response.json()
    cert = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == body["client_id"] == body["device_id"]
    assert body["principal"] == "2080"
    assert "PRIVATE KEY" in body["private_key_pem"]
    assert "mqtt_password" not in body
    again = client.get(f"/v1/devices/{body['device_id']}", headers=TECH_2080).json()
    assert "private_key_pem" not in again and "certificate_pem" not in again


def test_password_principal_gets_a_password_shown_once(client: TestClient) -> None:
    response = client.post("/v1/devices", json={"model": "bpm", "serial": "N2",
                                                "firmware": "1.2.0"}, headers=TECH_20)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["mqtt_username"] == body["device_id"]
    assert len(body["mqtt_password"]) >= 16
    assert "certificate_pem" not in body
    shown = client.get(f"/v1/devices/{body['device_id']}", headers=TECH_20).json()
    assert set(shown) == {"id", "principal", "client_id", "model", "serial", "state",
                          "created_at"}


def test_duplicate_device_is_409(client: TestClient) -> None:
    response = client.post("/v1/devices", json={"model": "bpm", "serial": "C1"},
                           headers=TECH_20)
    assert response.status_code == 409
    assert "C1" in response.json()["detail"]


def test_policy_refusal_is_422_naming_the_rule(client: TestClient) -> None:
    put = client.put("/v1/policy?principal=2080", json={"allowed_models": ["hub"]},
                     headers=ADMIN)
    assert put.status_code == 200, put.text
    response = client.post("/v1/devices", json={"model": "bpm", "serial": "N3"},
                           headers=TECH_2080)
    assert response.status_code == 422
    assert "allowed_models" in response.json()["detail"]


def test_technician_cannot_name_another_principal(client: TestClient) -> None:
    response = client.post("/v1/devices", json={"principal": "2080", "model": "bpm",
                                                "serial": "N4"}, headers=TECH_20)
    assert response.status_code == 403


def test_another_principals_device_is_not_found_on_every_route(
        client: TestClient, fleet: Fleet, database_url: str) -> None:
    for method, path, body in _device_routes(fleet.other_cuff, fleet.other_hub):
        response = client.request(method, path, json=body, headers=TECH_20)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"] == f"device {fleet.other_cuff} not found"
    # Nor may its own device pair with the other principal's hub, which stays unknown.
    pair = client.post(f"/v1/devices/{fleet.unpaired}/pair", json={"hub": fleet.other_hub},
                       headers=TECH_20)
    assert pair.status_code == 404
    assert pair.json()["detail"] == f"device {fleet.other_hub} not found"
    assert count(database_url, "SELECT count(*) FROM devices WHERE id = %s"
                 " AND state = 'assigned'", fleet.other_cuff) == 1


@pytest.mark.parametrize("role", [Role.CLINICIAN, Role.AUDITOR])
def test_clinicians_and_auditors_are_forbidden(client: TestClient, fleet: Fleet,
                                               role: Role) -> None:
    headers = bearer("20", role)
    routes = [*_device_routes(fleet.cuff, fleet.hub),
              ("POST", "/v1/devices", {"model": "bpm", "serial": "N5"}),
              ("POST", f"/v1/devices/{fleet.unpaired}/transfer",
               {"to_principal": "2080", "reason": "moved"}),
              ("GET", "/v1/policy", None), ("PUT", "/v1/policy", {}),
              ("GET", "/v1/policy/check", None),
              ("GET", "/v1/reports/unlicensed", None)]
    for method, path, body in routes:
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 403, (method, path, response.text)


def test_lifecycle_round_trip(client: TestClient, fleet: Fleet) -> None:
    device = f"/v1/devices/{fleet.cuff}"
    returned = client.post(f"{device}/return", json={"reason": "patient moved",
                                                     "fault": "cuff leaks"}, headers=TECH_20)
    assert returned.status_code == 200, returned.text
    assert returned.json()["state"] == "returned"
    wipe = client.post(f"{device}/recondition", json={"reason": "back from patient"},
                       headers=TECH_20)
    assert wipe.status_code == 200, wipe.text
    command = wipe.json()
    assert command["topic"].endswith("/wipe") and command["nonce"] in command["payload"]
    early = client.post(f"{device}/recondition/finish", headers=TECH_20)
    assert early.status_code == 409
    wrong = client.post(f"{device}/recondition/confirm", headers=TECH_20,
                        json={"nonce": "stale", "confirmed_at": "2026-11-01T08:00:00Z"})
    assert wrong.status_code == 409
    confirmed = client.post(f"{device}/recondition/confirm", headers=TECH_20,
                            json={"nonce": command["nonce"],
                                  "confirmed_at": datetime.now(UTC).isoformat()})
    assert confirmed.status_code == 200, confirmed.text
    finished = client.post(f"{device}/recondition/finish", headers=TECH_20)
    assert finished.json() == {"device_id": fleet.cuff, "state": "in_stock",
                               "needs_credentials": True}
    stale = client.post(f"{device}/assign", json={"patient": "19121212-1212",
                                                  "basis": "SoL"}, headers=TECH_20)
    assert stale.status_code == 409
    assert "needs new credentials" in stale.json()["detail"]
    reissued = client.post(f"{device}/reissue", headers=TECH_20)
    assert reissued.status_code == 200, reissued.text
    assert "certificate_pem" in reissued.json()
    assigned = client.post(f"{device}/assign", json={"patient": "19121212-1212",
                                                     "basis": "SoL"}, headers=TECH_20)
    assert assigned.status_code == 200, assigned.text
    assert client.get(device, headers=TECH_20).json()["state"] == "assigned"
    actions = [row["action"] for row in
               client.get(f"{device}/history", headers=TECH_20).json()]
    assert actions[-1] == "assigned"
    for action in ("returned", "reconditioning_started", "wipe_requested",
                   "credentials_revoked", "wipe_confirmed", "reconditioned"):
        assert action in actions


def test_retire_transfer_and_revoke(client: TestClient, fleet: Fleet) -> None:
    hub = f"/v1/devices/{fleet.hub}"
    denied = client.post(f"/v1/devices/{fleet.unpaired}/transfer", headers=TECH_20,
                         json={"to_principal": "2080", "reason": "moved"})
    assert denied.status_code == 403
    moved = client.post(f"/v1/devices/{fleet.unpaired}/transfer", headers=ADMIN,
                        json={"to_principal": "2080", "reason": "moved"})
    assert moved.status_code == 200, moved.text
    assert client.get(f"/v1/devices/{fleet.unpaired}", headers=TECH_20).status_code == 404
    parts = client.get(f"/v1/devices/{fleet.unpaired}/history?by_owner=true",
                       headers=TECH_2080).json()
    assert list(parts) == ["2080"] and parts["2080"][0]["action"] == "transferred_in"
    assert set(client.get(f"/v1/devices/{fleet.unpaired}/history?by_owner=true",
                          headers=ADMIN).json()) == {"20", "2080"}
    bad = client.post(f"{hub}/revoke", json={"reason": "because"}, headers=TECH_20)
    assert bad.status_code == 422 and "revocation reason" in bad.json()["detail"]
    revoked = client.post(f"{hub}/revoke", json={"reason": "key_compromise"},
                          headers=TECH_20)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["password_revoked"] is True
    retired = client.post(f"{hub}/retire", json={"reason": "worn out"}, headers=TECH_20)
    assert retired.json()["state"] == "retired"
    assert client.post(f"{hub}/retire", json={"reason": "again"},
                       headers=TECH_20).status_code == 409


def test_policy_versions_are_written_by_admins_only(client: TestClient) -> None:
    assert client.get("/v1/policy", headers=TECH_2080).json()["version"] == 0
    put = client.put("/v1/policy?principal=2080", json={"key_algorithm": "EC-P384"},
                     headers=ADMIN)
    assert put.json() == {"principal": "2080", "version": 1}
    current = client.get("/v1/policy", headers=TECH_2080).json()
    assert current["version"] == 1 and current["policy"]["key_algorithm"] == "EC-P384"
    assert client.put("/v1/policy", json={"key_algorithm": "EC-P256"},
                      headers=TECH_2080).status_code == 403
    invalid = client.put("/v1/policy", json={"key_algorithm": "RSA-1024"}, headers=ADMIN)
    assert invalid.status_code == 422 and "key_algorithm" in invalid.json()["detail"]
    check = client.get("/v1/policy/check", headers=TECH_20)
    assert check.status_code == 200 and isinstance(check.json()["items"], list)


def test_report_as_csv(client: TestClient, fleet: Fleet) -> None:
    response = client.get("/v1/reports/unlicensed?format=csv", headers=TECH_20)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text.splitlines()
    assert lines[0].startswith("device_id,principal,model,serial")
    assert [line.split(",")[0] for line in lines[1:]] == [fleet.cuff]
    as_json = client.get("/v1/reports/costs?month=2026-11", headers=ADMIN).json()
    assert as_json == {"report": "costs", "items": []}
    assert client.get("/v1/reports/idle?days=0", headers=ADMIN).status_code == 422


def test_without_a_ca_passphrase_certificate_routes_answer_503(
        database_url: str, fleet: Fleet) -> None:
    with TestClient(_app(database_url, None)) as api:
        refused = api.post("/v1/devices", json={"model": "bpm", "serial": "N6"},
                           headers=TECH_2080)
        assert refused.status_code == 503
        assert refused.json()["detail"] == "certificate authority not configured"
        # A password principal's onboarding needs no CA.
        assert api.post("/v1/devices", json={"model": "bpm", "serial": "N7"},
                        headers=TECH_20).status_code == 201


def test_onboarding_answers_the_bundle_without_the_gateway_password(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDLINK_MQTT_URL", "mqtt://aidlink-gateway:gw-pw-0b7e@127.0.0.1:1883")
    monkeypatch.delenv("AIDLINK_DEVICE_BROKER_URL", raising=False)
    response = client.post("/v1/devices", json={"model": "sim-bpm", "serial": "BND-1"},
                           headers=TECH_2080)
    assert response.status_code == 201, response.text
    assert "gw-pw-0b7e" not in response.text
    body = response.json()
    assert body["mqtt_url"] == "mqtt://127.0.0.1:1883"
    assert body["topic_prefix"] == f"aidlink/v1/{body['client_id']}/"
    assert body["profile"]["model"] == "sim-bpm"
    assert body["profile"]["reporting_interval_s"] == 86400
    assert "PRIVATE KEY" in body["private_key_pem"]

    monkeypatch.setenv("AIDLINK_DEVICE_BROKER_URL", "mqtts://x:y-pw-3d@mqtt.example.se:8883")
    bulk = client.post("/v1/devices/bulk", content="principal,model,serial\n20,sim-bpm,BND-2\n",
                       headers={**TECH_20, "Content-Type": "text/csv"})
    assert bulk.status_code == 200, bulk.text
    assert "y-pw-3d" not in bulk.text and "gw-pw-0b7e" not in bulk.text
    [row] = bulk.json()["onboarded"]
    assert row["mqtt_url"] == "mqtts://mqtt.example.se:8883"
    assert row["topic_prefix"] == f"aidlink/v1/{row['client_id']}/"
    assert row["profile"]["model"] == "sim-bpm"
    assert row["mqtt_password"]


def test_a_malformed_device_broker_setting_is_503_naming_it(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDLINK_DEVICE_BROKER_URL", "http://a:secret-9@mqtt.example.se")
    response = client.post("/v1/devices", json={"model": "sim-bpm", "serial": "BND-3"},
                           headers=TECH_2080)
    assert response.status_code == 503
    assert "AIDLINK_DEVICE_BROKER_URL" in response.json()["detail"]
    assert "secret-9" not in response.text
