"""OAuth2 client credentials, ES256 tokens, key rotation, JWKS, scopes and request limits,
over a real PostgreSQL."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from gateway.api.limits import RateLimiter
from gateway.auth import MAX_TOKEN_TTL_SECONDS, Role, SigningKey, issue_token
from gateway.cli import main
from gateway.token_keys import RETIRED_WINDOW, KeyRing, genesis_key
from provisioning import api_clients
from provisioning.policy import PolicyError, set_policy
from tests.support import SECRET, Fleet, api_client, bearer, count, seed

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed(database_url)


@pytest.fixture
def client(database_url: str, fleet: Fleet) -> Iterator[TestClient]:
    with api_client(database_url, rate_limit=None) as api:
        yield api


def register(url: str, *, principal: str = "20", role: Role = Role.CLINICIAN,
             scopes: tuple[str, ...] = ("observations", "events", "devices"),
             name: str = "EHR Dalarna") -> tuple[str, str]:
    """A registered client's id and secret."""
    with psycopg.connect(url) as conn:
        row, secret = api_clients.add_client(conn, principal=principal, role=role,
                                             scopes=scopes, name=name, actor="test")
    return row["client_id"], secret


def basic(client_id: str, secret: str) -> dict[str, str]:
    pair = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


def get_token(api: TestClient, client_id: str, secret: str, **extra: str) -> dict[str, Any]:
    response = api.post("/oauth/token", data={"grant_type": "client_credentials", **extra},
                        headers=basic(client_id, secret))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_client_credentials_by_basic_give_an_es256_token_that_the_jwks_verifies(
        client: TestClient, fleet: Fleet, database_url: str) -> None:
    client_id, secret = register(database_url)
    response = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                           headers=basic(client_id, secret))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert (body["token_type"], body["scope"]) == ("Bearer", "devices events observations")
    assert body["expires_in"] == 12 * 3600
    token = body["access_token"]
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    assert [sorted(k) for k in keys] == [["alg", "crv", "kid", "kty", "use", "x", "y"]]
    kid = jwt.get_unverified_header(token)["kid"]
    (jwk,) = [k for k in keys if k["kid"] == kid]
    assert (jwk["alg"], jwk["use"], jwk["crv"]) == ("ES256", "sig", "P-256")
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], issuer="aidlink")
    assert {k: claims[k] for k in ("sub", "principal", "role", "scope")} == {
        "sub": client_id, "principal": "20", "role": "clinician",
        "scope": "devices events observations"}
    assert claims["exp"] - claims["iat"] == 12 * 3600
    used = client.get("/v1/observations", params={"patient": fleet.patient},
                      headers=auth(token))
    assert used.status_code == 200, used.text
    assert count(database_url, "SELECT count(*) FROM access_log WHERE client = %s",
                 client_id) >= 1


def test_client_credentials_in_the_body_and_a_narrowed_scope(
        client: TestClient, fleet: Fleet, database_url: str) -> None:
    client_id, secret = register(database_url)
    response = client.post("/oauth/token", data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
        "scope": "observations"}, headers=FORM)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "observations"
    token = response.json()["access_token"]
    assert client.get("/v1/observations", params={"patient": fleet.patient},
                      headers=auth(token)).status_code == 200
    events = client.get("/v1/events", params={"patient": fleet.patient}, headers=auth(token))
    assert events.status_code == 403
    assert events.json()["detail"] == (f"token of client {client_id} lacks scope events,"
                                       " needed to read events (its scopes: observations)")


def test_token_endpoint_errors_follow_rfc_6749(client: TestClient, fleet: Fleet,
                                              database_url: str) -> None:
    client_id, secret = register(database_url)
    grant = {"grant_type": "client_credentials"}

    def post(data: dict[str, str], headers: dict[str, str]) -> tuple[int, str, str]:
        response = client.post("/oauth/token", data=data, headers=headers)
        body = response.json()
        assert response.headers["cache-control"] == "no-store"
        if response.status_code == 401:
            assert response.headers["www-authenticate"].startswith("Basic")
        return response.status_code, body["error"], body["error_description"]

    assert post(grant, basic(client_id, "wrong")) == (
        401, "invalid_client", f"client {client_id} is unknown or its secret is wrong")
    assert post(grant, basic("ac-nobody", secret)) == (
        401, "invalid_client", "client ac-nobody is unknown or its secret is wrong")
    assert post(grant, FORM) == (
        401, "invalid_client",
        "no client authentication: use HTTP Basic or client_id and client_secret in the body")
    assert post({**grant, "client_id": client_id, "client_secret": secret},
                basic(client_id, secret))[:2] == (400, "invalid_request")
    assert post({"grant_type": "password"}, basic(client_id, secret)) == (
        400, "unsupported_grant_type",
        "grant_type 'password' is not supported; only client_credentials is")
    assert post({}, {**basic(client_id, secret), **FORM}) == (400, "invalid_request",
                                                             "grant_type is missing")
    assert post({**grant, "scope": "observations audit"}, basic(client_id, secret)) == (
        400, "invalid_scope", f"scope audit is not granted to client {client_id}"
                              " (its scopes: devices, events, observations)")
    assert post({**grant, "scope": "everything"}, basic(client_id, secret))[:2] == (
        400, "invalid_scope")
    as_json = client.post("/oauth/token", json=grant, headers=basic(client_id, secret))
    assert (as_json.status_code, as_json.json()["error_description"]) == (
        400, "the body must be application/x-www-form-urlencoded, not application/json")


def test_a_disabled_client_gets_no_token(client: TestClient, fleet: Fleet,
                                         database_url: str) -> None:
    client_id, secret = register(database_url)
    with psycopg.connect(database_url) as conn:
        disabled = api_clients.disable_client(conn, client_id)
    response = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                           headers=basic(client_id, secret))
    assert response.status_code == 401
    assert response.json()["error_description"] == (
        f"client {client_id} was disabled at {disabled['disabled_at'].isoformat()}")


def test_expired_foreign_and_forged_tokens_are_refused(client: TestClient,
                                                      fleet: Fleet) -> None:
    own = genesis_key(SECRET)
    now = int(time.time())
    claims = {"iss": "aidlink", "sub": "x", "principal": "20", "role": "clinician",
              "scope": "observations"}
    expired = jwt.encode({**claims, "iat": now - 900, "exp": now - 120}, own.private_key,
                         algorithm="ES256", headers={"kid": own.kid})
    stranger = SigningKey(kid="stranger", private_key=ec.generate_private_key(ec.SECP256R1()))
    foreign = issue_token(stranger, principal="20", role=Role.CLINICIAN, subject="x",
                          ttl_seconds=600)
    forged = issue_token(SigningKey(kid=own.kid, private_key=stranger.private_key),
                         principal="20", role=Role.CLINICIAN, subject="x", ttl_seconds=600)
    hmac = jwt.encode({**claims, "iat": now, "exp": now + 60}, "k" * 32, algorithm="HS256",
                      headers={"kid": own.kid})
    answers = {name: client.get("/v1/observations", params={"patient": fleet.patient},
                                headers=auth(token))
               for name, token in (("expired", expired), ("foreign", foreign),
                                   ("forged", forged), ("hmac", hmac))}
    assert {name: (r.status_code, r.json()["detail"]) for name, r in answers.items()} == {
        "expired": (401, "token has expired"),
        "foreign": (401, "token is not valid: it is signed by unknown key 'stranger'"),
        "forged": (401, "token is not valid: Signature verification failed"),
        "hmac": (401, "token is not valid: algorithm 'HS256' is not ES256"),
    }


def test_rotation_keeps_old_tokens_until_their_key_leaves_the_jwks(
        client: TestClient, fleet: Fleet, database_url: str) -> None:
    client_id, secret = register(database_url)
    old_token = get_token(client, client_id, secret)["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    assert old_kid == genesis_key(SECRET).kid
    ring: KeyRing = client.app.state.aidlink.keys  # type: ignore[attr-defined]
    new_kid = ring.rotate()
    assert new_kid != old_kid
    assert [k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]] == [
        new_kid, old_kid]
    patient = {"patient": fleet.patient}
    assert client.get("/v1/observations", params=patient,
                      headers=auth(old_token)).status_code == 200
    new_token = get_token(client, client_id, secret)["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    # The old key's window ends: as if it had been retired longer ago than any token lives.
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE token_signing_keys SET created_at = created_at - %s,"
                     " retired_at = retired_at - %s WHERE kid = %s",
                     (RETIRED_WINDOW * 2, RETIRED_WINDOW * 2, old_kid))
    ring.reload()
    assert [k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]] == [new_kid]
    refused = client.get("/v1/observations", params=patient, headers=auth(old_token))
    assert refused.status_code == 401
    assert old_kid in refused.json()["detail"]
    assert client.get("/v1/observations", params=patient,
                      headers=auth(new_token)).status_code == 200


def test_a_key_ring_meeting_an_unknown_kid_reads_the_database_again(
        database_url: str, fleet: Fleet) -> None:
    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(database_url)

    api_ring = KeyRing(connect, SECRET, reload_seconds=0.2)
    cli_ring = KeyRing(connect, SECRET)
    first = api_ring.current()
    rotated = cli_ring.rotate()
    time.sleep(0.3)
    assert api_ring.public_key(rotated) is not None
    assert api_ring.public_key(first.kid) is not None
    assert [k["kid"] for k in api_ring.jwks()["keys"]] == [rotated, first.kid]
    assert api_ring.current().kid == rotated


def test_signing_keys_are_stored_encrypted_and_a_clear_key_is_refused(
        database_url: str, fleet: Fleet) -> None:
    ring = KeyRing(lambda: psycopg.connect(database_url), SECRET)
    kid = ring.current().kid
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT private_key_pem, public_jwk FROM token_signing_keys"
                           " WHERE kid = %s", (kid,)).fetchone()
        assert row is not None
        assert bytes(row[0]).startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert "d" not in row[1]
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO token_signing_keys (kid, private_key_pem, public_jwk)"
                         " VALUES ('k', '-----BEGIN PRIVATE KEY-----'::bytea,"
                         " '{\"kty\": \"EC\", \"crv\": \"P-256\", \"kid\": \"k\"}')")
    other = KeyRing(lambda: psycopg.connect(database_url), b"another-secret" * 3)
    with pytest.raises(Exception, match=f"token signing key {kid} cannot be decrypted"):
        other.current()


def test_scopes_are_enforced_with_the_role(client: TestClient, fleet: Fleet,
                                          database_url: str) -> None:
    devices_only, secret = register(database_url, scopes=("devices",))
    token = get_token(client, devices_only, secret)["access_token"]
    observations = client.get("/v1/observations", params={"patient": fleet.patient},
                              headers=auth(token))
    assert observations.status_code == 403
    assert observations.json()["detail"] == (
        f"token of client {devices_only} lacks scope observations, needed to read patient"
        " data (its scopes: devices)")
    technician, tech_secret = register(database_url, role=Role.TECHNICIAN,
                                       scopes=("devices",), name="Asset tool")
    tech_token = get_token(client, technician, tech_secret)["access_token"]
    provisioning = client.get(f"/v1/devices/{fleet.cuff}", headers=auth(tech_token))
    assert provisioning.status_code == 403
    assert "lacks scope provisioning" in provisioning.json()["detail"]
    # The command-line style token of a technician has its role's scopes, provisioning too.
    assert client.get(f"/v1/devices/{fleet.cuff}",
                      headers=bearer("20", Role.TECHNICIAN)).status_code == 200
    with psycopg.connect(database_url) as conn, pytest.raises(
            Exception, match="scope audit is of no use to role clinician"):
        api_clients.add_client(conn, principal="20", role=Role.CLINICIAN, scopes=["audit"],
                               name="x", actor="test")


def test_policy_api_clients_limits_registration_and_tokens(
        client: TestClient, fleet: Fleet, database_url: str) -> None:
    allowed, secret = register(database_url, name="EHR Dalarna")
    with psycopg.connect(database_url) as conn:
        set_policy(conn, "20", {"device_auth": "password", "api_clients": ["EHR Dalarna"]},
                   "test")
        with pytest.raises(PolicyError) as refused:
            api_clients.add_client(conn, principal="20", role=Role.CLINICIAN,
                                   scopes=["observations"], name="Alarm receiver",
                                   actor="test", client_id="alarm-1")
    assert str(refused.value) == (
        "principal 20's policy v1: api_clients does not list client alarm-1 or its name"
        " 'Alarm receiver' (it lists EHR Dalarna)")
    assert get_token(client, allowed, secret)["scope"] == "devices events observations"
    with psycopg.connect(database_url) as conn:
        set_policy(conn, "20", {"device_auth": "password", "api_clients": ["another"]}, "test")
    response = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                           headers=basic(allowed, secret))
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"
    assert "principal 20's policy v2: api_clients does not list client" in (
        response.json()["error_description"])


def test_a_client_over_its_rate_limit_gets_429_with_retry_after(
        database_url: str, fleet: Fleet) -> None:
    with api_client(database_url, rate_limit=(0.5, 3)) as api:
        for _ in range(5):  # unauthenticated requests spend nobody's bucket
            assert api.get("/v1/observations").status_code == 401
        url, params = "/v1/observations", {"patient": fleet.patient}
        statuses = [api.get(url, params=params, headers=bearer("20")).status_code
                    for _ in range(3)]
        assert statuses == [200, 200, 200]
        over = api.get(url, params=params, headers=bearer("20"))
        assert over.status_code == 429
        assert int(over.headers["retry-after"]) >= 1
        assert over.json()["detail"].startswith(
            "client test-clinician of principal 20 is over its rate limit of 0.5 requests/s"
            " with bursts of 3; retry after ")
        fhir = api.get("/fhir/r4/Observation", params={"subject": f"Patient/{fleet.patient}"},
                       headers=bearer("20"))
        assert fhir.status_code == 429 and fhir.json()["resourceType"] == "OperationOutcome"
        assert "retry-after" in fhir.headers
        # Another client has a bucket of its own.
        assert api.get(url, params=params, headers=bearer("2080")).status_code == 200


def test_rate_limiter_refills_at_its_rate() -> None:
    now = [100.0]
    limiter = RateLimiter(2.0, 2, clock=lambda: now[0])
    assert [limiter.take("a"), limiter.take("a"), limiter.take("a")] == [None, None, 1]
    now[0] += 0.5
    assert limiter.take("a") is None
    assert limiter.take("b") is None
    slow = RateLimiter(0.1, 1, clock=lambda: now[0])
    assert slow.take("a") is None
    assert slow.take("a") == 10


def test_oversized_bodies_get_413_naming_the_limit(database_url: str, fleet: Fleet) -> None:
    with api_client(database_url, rate_limit=None) as api:
        big = api.post("/oauth/token", content=b"x" * (1024 * 1024 + 1), headers=FORM)
        assert big.status_code == 413
        assert big.json()["detail"] == ("request body of 1048577 bytes exceeds the limit of"
                                        " 1048576 bytes (1 MiB) for /oauth/token")

        def chunks() -> Iterator[bytes]:
            for _ in range(3):
                yield b"y" * (512 * 1024)

        streamed = api.post("/oauth/token", content=chunks(), headers=FORM)
        assert streamed.status_code == 413
        assert streamed.json()["detail"] == ("request body exceeds the limit of 1048576 bytes"
                                             " (1 MiB) for /oauth/token")
        # Bulk onboarding takes more: 2 MiB passes this wall and meets the route's own check.
        bulk = api.post("/v1/devices/bulk", content=b"principal,model,serial\n" * 90_000,
                        headers={**bearer("20", Role.TECHNICIAN), "Content-Type": "text/csv"})
        assert bulk.status_code != 413, bulk.text


def test_command_line_registers_lists_and_disables_clients_and_rotates_keys(
        database_url: str, fleet: Fleet, tmp_path: Path) -> None:
    env = {"AIDLINK_DATABASE_URL": database_url, "AIDLINK_HOME": str(tmp_path),
           "AIDLINK_SECRET": SECRET.decode(), "AIDLINK_MQTT_URL": None}

    def run(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    code, out, err = run("client", "add", "--principal", "20", "--role", "auditor",
                         "--name", "Audit desk")
    assert code == 0, err
    added = json.loads(out)
    assert added["scopes"] == ["audit"] and added["principal"] == "20"
    stored = count(database_url, "SELECT count(*) FROM api_clients WHERE client_id = %s"
                   " AND secret_hash LIKE 'scrypt$%%' AND secret_hash NOT LIKE %s",
                   added["client_id"], f"%{added['client_secret']}%")
    assert stored == 1
    code, out, _ = run("client", "list", "--principal", "20")
    listed = [json.loads(line) for line in out.splitlines()]
    assert [row["client_id"] for row in listed] == [added["client_id"]]
    assert "client_secret" not in listed[0] and "secret_hash" not in listed[0]
    code, _, err = run("client", "add", "--principal", "20", "--role", "auditor",
                       "--scope", "devices", "--name", "x")
    assert code == 1 and err == ("aidlink: scope devices is of no use to role auditor"
                                 " (its scopes: audit)\n")
    code, out, err = run("client", "disable", added["client_id"])
    assert code == 0, err
    assert json.loads(out)["disabled_at"] is not None
    code, _, err = run("client", "disable", "ac-missing")
    assert (code, err) == (1, "aidlink: client ac-missing does not exist\n")
    code, out, err = run("keys", "rotate")
    assert code == 0, err
    kid = json.loads(out)["kid"]
    code, out, _ = run("keys", "list")
    keys = [json.loads(line) for line in out.splitlines()]
    assert [(k["kid"], k["current"], k["published"]) for k in keys] == [
        (kid, True, True), (genesis_key(SECRET).kid, False, True)]
    code, out, _ = run("token", "--principal", "20", "--role", "clinician")
    assert jwt.get_unverified_header(out.strip())["kid"] == kid
    code, _, err = run("token", "--principal", "20", "--role", "clinician",
                       "--ttl", str(MAX_TOKEN_TTL_SECONDS + 1))
    assert code == 2 and "--ttl" in err
