"""The technician console's login and session, in-process over a real PostgreSQL: the
session cookie, login and its refusals, expiry and logout, the CSRF token (refused posts and
its binding to the session) and isolation between principals."""

from __future__ import annotations

import time

import jwt
import pytest
from fastapi.testclient import TestClient

from gateway.api.console.session import COOKIE, csrf_token
from gateway.auth import ALGORITHM, Role, issue_token
from gateway.token_keys import genesis_key
from tests import console_support
from tests.console_support import add_client, hidden_csrf, logged_in, login
from tests.support import SECRET, Fleet, count
from tests.test_row_security import store_readings

# The console's shared fixtures, which pytest finds under these names in this module.
fleet = console_support.fleet
app_client = console_support.app_client


# --- login ------------------------------------------------------------------------------


def test_login_sets_a_strict_httponly_cookie_scoped_to_the_console(
        app_client: TestClient, database_url: str) -> None:
    answer = login(app_client, *add_client(database_url, "20", Role.TECHNICIAN))
    assert answer.status_code == 303
    cookie = next(v for k, v in answer.headers.multi_items()
                  if k == "set-cookie" and v.startswith(f"{COOKIE}="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; https sets it (see the next test)
    page = app_client.get("/console/")
    assert page.status_code == 200
    assert 'lang="sv"' in page.text


def test_the_cookie_is_secure_behind_https(app_client: TestClient, database_url: str) -> None:
    secure = TestClient(app_client.app, base_url="https://testserver", follow_redirects=False)
    answer = login(secure, *add_client(database_url, "20", Role.TECHNICIAN))
    assert answer.status_code == 303
    assert all("Secure" in v for k, v in answer.headers.multi_items() if k == "set-cookie")
    # Behind a proxy that ends TLS, the forwarded scheme counts.
    form = app_client.get("/console/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in form.headers["set-cookie"]


def test_login_is_refused_with_a_bad_secret(app_client: TestClient,
                                            database_url: str) -> None:
    client_id, _ = add_client(database_url, "20", Role.TECHNICIAN)
    answer = login(app_client, client_id, "not-the-secret")
    assert answer.status_code == 401
    assert "Inloggningen nekades" in answer.text
    assert COOKIE not in app_client.cookies
    assert app_client.get("/console/").status_code == 303


def test_login_is_refused_without_its_csrf_token(app_client: TestClient,
                                                 database_url: str) -> None:
    client_id, secret = add_client(database_url, "20", Role.TECHNICIAN)
    answer = app_client.post("/console/login", data={"client_id": client_id,
                                                     "client_secret": secret, "csrf": "x"})
    assert answer.status_code == 403
    assert f"{COOKIE}=" not in answer.headers.get("set-cookie", "")


def test_a_clinician_client_may_not_use_the_console(app_client: TestClient,
                                                    database_url: str) -> None:
    answer = login(app_client, *add_client(database_url, "20", Role.CLINICIAN))
    assert answer.status_code == 403
    assert "clinician" in answer.text


def test_empty_fields_are_named_beside_their_inputs(app_client: TestClient) -> None:
    form = app_client.get("/console/login?lang=en")
    answer = app_client.post("/console/login", data={"csrf": hidden_csrf(form.text)})
    assert answer.status_code == 422
    assert 'aria-describedby="f-client_id-error"' in answer.text
    assert 'id="f-client_id-error">This field is required.' in answer.text


@pytest.mark.parametrize("path", ["/console/", "/console/devices/dev-x", "/console/onboard",
                                  "/console/bulk", "/console/licences", "/console/bulk/x"])
def test_pages_require_login(app_client: TestClient, path: str) -> None:
    answer = app_client.get(path)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?message=login.required"


def test_an_expired_token_leads_to_the_login_page_with_a_message(
        app_client: TestClient) -> None:
    key = genesis_key(SECRET)
    now = int(time.time())
    stale = jwt.encode({"iss": "aidlink", "sub": "t", "principal": "20", "role": "technician",
                        "scope": "devices provisioning", "iat": now - 7200, "exp": now - 3600},
                       key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})
    answer = app_client.get("/console/", headers={"Cookie": f"{COOKIE}={stale}"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?message=login.expired"
    shown = app_client.get(answer.headers["location"] + "&lang=en")
    assert "Your session has expired" in shown.text


def test_logout_clears_the_cookie_and_needs_the_csrf_token(app_client: TestClient,
                                                           database_url: str) -> None:
    csrf = logged_in(app_client, database_url)
    assert app_client.post("/console/logout", data={"csrf": "wrong"}).status_code == 403
    answer = app_client.post("/console/logout", data={"csrf": csrf})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?message=login.out"
    assert app_client.get("/console/").status_code == 303


# --- CSRF and isolation -------------------------------------------------------------------


@pytest.mark.parametrize("csrf", [None, "", "0" * 64])
def test_posts_without_the_sessions_csrf_token_are_refused(
        app_client: TestClient, database_url: str, fleet: Fleet, csrf: str | None) -> None:
    logged_in(app_client, database_url)
    before = count(database_url, "SELECT count(*) FROM devices")
    data = {"model": "bpm", "serial": "CSRF-1"} | ({} if csrf is None else {"csrf": csrf})
    answer = app_client.post("/console/onboard", data=data)
    assert answer.status_code == 403
    assert "säkerhetstoken" in answer.text
    answer = app_client.post(f"/console/devices/{fleet.unpaired}/assign",
                             data={"patient": "p-1", "basis": "HSL"})
    assert answer.status_code == 403
    assert count(database_url, "SELECT count(*) FROM devices") == before
    assert count(database_url, "SELECT count(*) FROM assignments") == 2


@pytest.mark.parametrize("role", [Role.TECHNICIAN, Role.ADMIN])
def test_another_principals_device_is_not_found(app_client: TestClient, database_url: str,
                                                fleet: Fleet, role: Role) -> None:
    store_readings(database_url, fleet)
    csrf = logged_in(app_client, database_url, "2080", role)
    for answer in (app_client.get(f"/console/devices/{fleet.cuff}"),
                   app_client.post(f"/console/devices/{fleet.cuff}/return",
                                   data={"csrf": csrf, "reason": "test"})):
        assert answer.status_code == 404, answer.text
        assert "C1" not in answer.text and "19121212" not in answer.text
    fleet_page = app_client.get("/console/")
    assert fleet.other_cuff in fleet_page.text
    assert fleet.cuff not in fleet_page.text and fleet.hub not in fleet_page.text


def test_the_csrf_token_is_bound_to_the_session() -> None:
    one = issue_token(genesis_key(SECRET), principal="20", role=Role.TECHNICIAN,
                      subject="a", ttl_seconds=60)
    two = issue_token(genesis_key(SECRET), principal="20", role=Role.TECHNICIAN,
                      subject="a", ttl_seconds=60)
    assert csrf_token(SECRET, one) != csrf_token(SECRET, two)
    assert csrf_token(SECRET, one) != csrf_token(b"another-secret" * 4, one)
