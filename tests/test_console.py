"""The technician console over a real PostgreSQL, in-process: login and its refusals, CSRF,
isolation between principals, the access log, languages, labels, and the device actions."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import jwt
import psycopg
import pytest
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.api.console import onboard as onboard_page
from gateway.api.console.session import COOKIE, csrf_token
from gateway.auth import ALGORITHM, Role, issue_token
from gateway.renewal_thread import RenewalLoop
from gateway.services.mosquitto import MosquittoProcess
from gateway.token_keys import genesis_key
from provisioning import api_clients, licences, lifecycle, pilots
from tests.support import SECRET, Fleet, count, seed, wait_for
from tests.test_row_security import store_readings

PASSPHRASE = b"console-test-ca-passphrase-0123456789"


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed(database_url)


@pytest.fixture
def app_client(database_url: str, fleet: Fleet) -> Iterator[TestClient]:
    app = create_app(database_url=database_url, secret=SECRET, ca_passphrase=PASSPHRASE,
                     rate_limit=None)
    with TestClient(app, follow_redirects=False) as client:
        yield client


def add_client(url: str, principal: str, role: Role) -> tuple[str, str]:
    """An OAuth client of ``principal`` with all of its role's scopes: (id, secret)."""
    scopes = {Role.TECHNICIAN: ["devices", "provisioning"], Role.CLINICIAN: ["observations"],
              Role.ADMIN: ["observations", "events", "devices", "provisioning", "audit"]}[role]
    with psycopg.connect(url) as conn:
        row, secret = api_clients.add_client(
            conn, principal=principal, role=role, scopes=scopes, actor="test",
            name=f"console {role} {uuid.uuid4().hex[:6]}")
    return str(row["client_id"]), secret


def hidden_csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found, f"no CSRF field in: {html[:300]}"
    return found.group(1)


def login(client: TestClient, client_id: str, secret: str) -> Any:
    form = client.get("/console/login")
    return client.post("/console/login", data={
        "client_id": client_id, "client_secret": secret, "csrf": hidden_csrf(form.text)})


def logged_in(client: TestClient, url: str, principal: str = "20",
              role: Role = Role.TECHNICIAN) -> str:
    """Log ``client`` in as a new client of ``principal``; the session's CSRF token."""
    answer = login(client, *add_client(url, principal, role))
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/"
    return hidden_csrf(client.get("/console/").text)


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


# --- languages and accessibility ----------------------------------------------------------


def test_language_by_query_cookie_and_accept_language(app_client: TestClient) -> None:
    assert '<html lang="sv">' in app_client.get("/console/login").text
    english = app_client.get("/console/login?lang=en")
    assert '<html lang="en">' in english.text and "Client secret" in english.text
    # Remembered by the cookie, until switched back.
    assert '<html lang="en">' in app_client.get("/console/login").text
    assert "Klienthemlighet" in app_client.get("/console/login?lang=sv").text
    app_client.cookies.clear()
    by_browser = app_client.get("/console/login", headers={"Accept-Language": "en-GB,sv;q=0.5"})
    assert '<html lang="en">' in by_browser.text
    by_browser = app_client.get("/console/login",
                                headers={"Accept-Language": "de, sv;q=0.8, en;q=0.7"})
    assert '<html lang="sv">' in by_browser.text


class Audit(HTMLParser):
    """What an accessibility check needs of a page: inputs, labels, headers, landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[dict[str, str | None]] = []
        self.labels: set[str] = set()
        self.header_scopes: list[str | None] = []
        self.ids: list[str] = []
        self.tags: set[str] = set()
        self.skip = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.add(tag)
        if found.get("id"):
            self.ids.append(str(found["id"]))
        if tag in ("input", "select", "textarea") and found.get("type") not in (
                "hidden", "submit"):
            self.inputs.append(found)
        elif tag == "label" and found.get("for"):
            self.labels.add(str(found["for"]))
        elif tag == "th":
            self.header_scopes.append(found.get("scope"))
        elif tag == "a" and found.get("href") == "#main":
            self.skip = True


def audit(html: str) -> Audit:
    parsed = Audit()
    parsed.feed(html)
    assert parsed.skip, "no skip link to #main"
    assert {"main", "header"} <= parsed.tags
    for field in parsed.inputs:
        assert field.get("id") in parsed.labels, f"input without a label: {field}"
        for described in (field.get("aria-describedby") or "").split():
            assert described in parsed.ids, f"aria-describedby names no element: {field}"
    assert all(scope in ("col", "row") for scope in parsed.header_scopes), parsed.header_scopes
    assert len(parsed.ids) == len(set(parsed.ids)), "duplicate ids"
    return parsed


@pytest.mark.parametrize("lang", ["sv", "en"])
def test_every_page_labels_its_inputs_and_scopes_its_headers(
        app_client: TestClient, database_url: str, fleet: Fleet, lang: str) -> None:
    store_readings(database_url, fleet)
    audit(app_client.get(f"/console/login?lang={lang}").text)
    logged_in(app_client, database_url, role=Role.ADMIN)
    for path in ("/console/", f"/console/devices/{fleet.cuff}",
                 f"/console/devices/{fleet.unpaired}", "/console/onboard", "/console/bulk",
                 "/console/licences"):
        answer = app_client.get(path)
        assert answer.status_code == 200, f"{path}: {answer.text[:300]}"
        assert f'<html lang="{lang}">' in answer.text
        assert "Content-Security-Policy" in answer.headers
        parsed = audit(answer.text)
        if path == "/console/onboard":
            assert [i["name"] for i in parsed.inputs] == list(onboard_page.FIELDS)


# --- pages and actions -------------------------------------------------------------------


def test_readings_are_plotted_for_an_admin_and_the_read_is_logged(
        app_client: TestClient, database_url: str, fleet: Fleet) -> None:
    store_readings(database_url, fleet)
    logged_in(app_client, database_url, role=Role.ADMIN)
    page = app_client.get(f"/console/devices/{fleet.cuff}?lang=en")
    assert page.status_code == 200
    assert '<svg class="plot"' in page.text
    assert 'aria-labelledby="plot-title plot-desc"' in page.text
    table = page.text[page.text.index('<table id="readings">'):]
    assert "Systolic blood pressure" in table and "121" in table and "mm[Hg]" in table
    assert count(database_url, "SELECT count(*) FROM access_log WHERE role = 'admin'"
                 " AND detail->>'route' = %s", f"/console/devices/{fleet.cuff}") == 1


def test_a_technician_sees_no_readings_but_the_reason(app_client: TestClient,
                                                     database_url: str, fleet: Fleet) -> None:
    store_readings(database_url, fleet)
    logged_in(app_client, database_url)
    page = app_client.get(f"/console/devices/{fleet.cuff}?lang=en")
    assert page.status_code == 200
    assert "Readings are patient data" in page.text and '<svg class="plot"' not in page.text
    assert count(database_url, "SELECT count(*) FROM access_log") == 0


def test_onboard_assign_return_recondition_through_the_forms(
        app_client: TestClient, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDLINK_DEVICE_BROKER_URL", "mqtts://mqtt.example.se:8883")
    csrf = logged_in(app_client, database_url)
    made = app_client.post("/console/onboard?lang=en", data={
        "csrf": csrf, "model": "bpm", "serial": "CONSOLE-1", "firmware": "1.2"})
    assert made.status_code == 200, made.text
    device = re.search(r'id="device-id">(dev-[0-9a-f]+)<', made.text)
    assert device and 'id="mqtt-password">' in made.text
    # What the device is configured with besides its password: where to connect and publish.
    assert 'id="mqtt-url">mqtts://mqtt.example.se:8883<' in made.text
    client_id = re.search(r'id="mqtt-username">([^<]+)<', made.text)
    assert client_id and f'id="topic-prefix">aidlink/v1/{client_id.group(1)}/<' in made.text
    base = f"/console/devices/{device.group(1)}"
    refused = app_client.post(f"{base}/assign?lang=en", data={"csrf": csrf, "basis": "HSL"})
    assert refused.status_code == 422
    assert 'id="f-assign-patient-error">This field is required.' in refused.text
    steps = [("assign", {"patient": "p-console", "basis": "SoL"}, "Assigned"),
             ("return", {"reason": "patient moved"}, "Returned"),
             ("recondition", {"reason": "back from patient"}, "Reconditioning")]
    for action, data, state in steps:
        answer = app_client.post(f"{base}/{action}", data={"csrf": csrf, **data})
        if action != "recondition":
            # Post/redirect/get, so a reload does not repeat the action.
            assert answer.status_code == 303, answer.text
            assert answer.headers["location"] == f"{base}?done={action}"
            answer = app_client.get(answer.headers["location"] + "&lang=en")
            assert f"The device is {'assigned' if action == 'assign' else 'taken back'}." \
                in answer.text
        else:
            assert answer.status_code == 200, answer.text
        assert f'id="device-state">{state}<' in answer.text
    assert f"aidlink/v1/{device.group(1)}/down/wipe" in answer.text
    history = answer.text[answer.text.index('<table id="history">'):]
    assert [a for a in ("onboarded", "assigned", "returned", "reconditioning_started")
            if a in history] == ["onboarded", "assigned", "returned", "reconditioning_started"]
    again = app_client.post(f"{base}/return?lang=en", data={"csrf": csrf, "reason": "x"})
    assert again.status_code == 409 and "only a device assigned" in again.text


def wipe_shown(client: TestClient, base: str) -> str:
    page = client.get(f"{base}?lang=en")
    assert page.status_code == 200, page.text
    found = re.search(r'<dd id="wipe-state">([^<]*)</dd>', page.text)
    assert found, "the device page shows no wipe state"
    return found.group(1)


def test_the_device_page_follows_the_wipe_from_request_to_broker_to_confirmation(
        app_client: TestClient, database_url: str, mosquitto: MosquittoProcess) -> None:
    csrf = logged_in(app_client, database_url)
    made = app_client.post("/console/onboard", data={"csrf": csrf, "model": "bpm",
                                                     "serial": "WIPE-1"})
    device = re.search(r'id="device-id">(dev-[0-9a-f]+)<', made.text)
    assert device, made.text
    base = f"/console/devices/{device.group(1)}"
    assert 'id="wipe-state"' not in app_client.get(base).text
    for action, data in (("assign", {"patient": "p-wipe", "basis": "SoL"}),
                         ("return", {"reason": "back"}), ("recondition", {"reason": "reuse"})):
        answer = app_client.post(f"{base}/{action}?lang=en", data={"csrf": csrf, **data})
        assert answer.status_code in (200, 303), answer.text
    assert "the device keeps its credentials until it confirms the wipe" in answer.text
    with psycopg.connect(database_url) as conn:
        nonce, password = conn.execute(
            "SELECT w.nonce, d.mqtt_password_hash IS NOT NULL FROM wipe_requests w"
            " JOIN devices d ON d.id = w.device_id WHERE w.device_id = %s",
            (device.group(1),)).fetchone() or (None, None)
    # Starting reconditioning revoked nothing: the device needs its login to get the wipe.
    assert nonce and password is True
    requested = wipe_shown(app_client, base)
    assert requested.startswith("Requested ") and "next downlink round" in requested
    # The nonce was shown once, with the command; a later page does not show it.
    assert nonce not in app_client.get(f"{base}?lang=en").text
    loop = RenewalLoop(database_url, mosquitto.url, PASSPHRASE, interval_s=3600)
    loop.start()
    try:
        wait_for(lambda: loop.rounds, 15, "the first downlink round")
    finally:
        loop.stop()
    assert [w["published"] for w in loop.last_wipes] == [True]
    published = wipe_shown(app_client, base)
    assert published.startswith("The command has been held by the MQTT broker since ")
    with psycopg.connect(database_url) as conn:
        lifecycle.confirm_wipe(conn, device_id=device.group(1), nonce=nonce,
                               confirmed_at=datetime(2026, 11, 20, 9, 15, tzinfo=UTC),
                               actor="technician")
    confirmed = wipe_shown(app_client, base)
    assert confirmed.startswith("Confirmed: the device was wiped 2026-11-20")
    assert confirmed.endswith("its credentials are revoked")


def test_onboarding_refusals_are_shown_beside_the_form(app_client: TestClient,
                                                       database_url: str) -> None:
    csrf = logged_in(app_client, database_url)
    first = app_client.post("/console/onboard", data={"csrf": csrf, "model": "bpm",
                                                      "serial": "DUP-1"})
    assert first.status_code == 200
    second = app_client.post("/console/onboard", data={"csrf": csrf, "model": "bpm",
                                                       "serial": "DUP-1"})
    assert second.status_code == 409 and "already onboarded" in second.text
    missing = app_client.post("/console/onboard", data={"csrf": csrf, "model": "bpm"})
    assert missing.status_code == 422 and 'aria-invalid="true"' in missing.text


def test_a_unit_limited_pilot_is_met_through_the_onboarding_forms_unit(
        app_client: TestClient, database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        pilots.set_pilot(conn, "bpm", units=["Hemsjukvården Falun"], actor="test")
    csrf = logged_in(app_client, database_url)
    outside = app_client.post("/console/onboard?lang=en", data={
        "csrf": csrf, "model": "bpm", "serial": "PILOT-1", "unit": "Vårdcentralen Mora"})
    inside = app_client.post("/console/onboard?lang=en", data={
        "csrf": csrf, "model": "bpm", "serial": "PILOT-2", "unit": "Hemsjukvården Falun"})
    assert outside.status_code == 422 and "pilot rule" in outside.text, outside.text
    assert inside.status_code == 200 and 'id="device-id">dev-' in inside.text, inside.text


def test_bulk_upload_shows_progress_and_hands_out_credentials_once(
        app_client: TestClient, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Read per request, as the API's bulk route reads it; its user and password never go out.
    monkeypatch.setenv("AIDLINK_DEVICE_BROKER_URL", "mqtts://ops:pw@mqtt.example.se:8883")
    csrf = logged_in(app_client, database_url)
    text = "principal,model,serial\n20,bpm,BULK-1\n20,bpm,BULK-2\n2080,bpm,BULK-3\n20,,BULK-4\n"
    answer = app_client.post("/console/bulk", data={"csrf": csrf},
                             files={"file": ("fleet.csv", text.encode(), "text/csv")})
    assert answer.status_code == 303, answer.text
    job = answer.headers["location"]

    def finished() -> str | None:
        page = app_client.get(job + "?lang=en")
        assert page.status_code == 200
        return page.text if 'id="bulk-result"' in page.text else None

    page = wait_for(finished, what="the bulk job to finish")
    assert "Done: 2 onboarded, 2 refused of 4 rows." in page
    assert "may not onboard devices for principal 2080" in page
    download = app_client.post(job + "/credentials", data={"csrf": csrf})
    assert download.status_code == 200
    assert sorted(row["serial"] for row in download.json()) == ["BULK-1", "BULK-2"]
    assert all(row["mqtt_password"] for row in download.json())
    assert {row["mqtt_url"] for row in download.json()} == {"mqtts://mqtt.example.se:8883"}
    assert all(row["topic_prefix"] == f"aidlink/v1/{row['client_id']}/"
               for row in download.json())
    assert app_client.post(job + "/credentials", data={"csrf": csrf}).status_code == 409
    # Another client's session does not see the job at all.
    other = TestClient(app_client.app, follow_redirects=False)
    logged_in(other, database_url)
    assert other.get(job).status_code == 404


def test_bulk_upload_onboards_nothing_while_the_device_broker_setting_is_wrong(
        app_client: TestClient, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDLINK_DEVICE_BROKER_URL", "http://mqtt.example.se")
    csrf = logged_in(app_client, database_url)
    answer = app_client.post("/console/bulk?lang=en", data={"csrf": csrf}, files={
        "file": ("fleet.csv", b"principal,model,serial\n20,bpm,BAD-1\n", "text/csv")})
    assert answer.status_code == 503
    assert "AIDLINK_DEVICE_BROKER_URL" in answer.text
    assert count(database_url, "SELECT count(*) FROM devices WHERE serial = 'BAD-1'") == 0


def test_licences_page_shows_expiries_and_the_months_costs(
        app_client: TestClient, database_url: str, fleet: Fleet) -> None:
    with psycopg.connect(database_url) as conn:
        licences.add_vendor(conn, code="V1", name="Vendor")
        licences.add_product(conn, article_number="ART-1", name="Cuff", product_class="bpm",
                             vendor="V1")
        licences.add_terms(conn, code="T1", article_number="ART-1", period="monthly",
                           price=Decimal("31"), device_included=True, acquisition="rent",
                           device_price=None)
        licences.set_traceability(conn, device_id=fleet.cuff, article_number="ART-1",
                                  individual_number="I-1", actor="t")
        licences.start_licence(conn, device_id=fleet.cuff, terms="T1",
                               start_date=date(2026, 11, 1), end_date=date(2026, 12, 31),
                               actor="t")
    logged_in(app_client, database_url)
    page = app_client.get("/console/licences?month=2026-11&lang=en")
    assert page.status_code == 200
    assert "Monthly costs 2026-11" in page.text and "31.00" in page.text
    assert "2026-12-31" in page.text and fleet.cuff in page.text
    assert app_client.get("/console/licences?month=2026-13").status_code == 422


def test_the_stylesheet_is_served_from_the_package(app_client: TestClient) -> None:
    answer = app_client.get("/console/static/console.css")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/css")
    assert ":focus-visible" in answer.text


def test_the_csrf_token_is_bound_to_the_session() -> None:
    one = issue_token(genesis_key(SECRET), principal="20", role=Role.TECHNICIAN,
                      subject="a", ttl_seconds=60)
    two = issue_token(genesis_key(SECRET), principal="20", role=Role.TECHNICIAN,
                      subject="a", ttl_seconds=60)
    assert csrf_token(SECRET, one) != csrf_token(SECRET, two)
    assert csrf_token(SECRET, one) != csrf_token(b"another-secret" * 4, one)
