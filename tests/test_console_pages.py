"""The technician console's pages, in-process over a real PostgreSQL: languages (query,
cookie, Accept-Language), accessibility of every page (labels, header scopes, landmarks),
the device page's readings for an admin but not a technician (and the access log), the
licences page and the stylesheet."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from html.parser import HTMLParser

import psycopg
import pytest
from fastapi.testclient import TestClient

from gateway.api.console import onboard as onboard_page
from gateway.auth import Role
from provisioning import licences
from tests import console_support
from tests.console_support import logged_in
from tests.support import Fleet, count
from tests.test_row_security import store_readings

# The console's shared fixtures, which pytest finds under these names in this module.
fleet = console_support.fleet
app_client = console_support.app_client


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


# --- device and licence pages, the stylesheet --------------------------------------------


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
