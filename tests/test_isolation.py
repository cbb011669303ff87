"""Principals are isolated on every route: a caller of principal 2080 that names principal 20's
patients, devices, events or licences gets 404 (403 where it names the principal itself, an
empty result from a search) and never any of principal 20's data.

The table in tests/isolation_cases.py must hold a case for every route the application
serves: a new route without one fails ``test_every_route_has_an_isolation_case`` with the
route named, and a case whose route is gone fails ``test_every_case_names_a_served_route``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import httpx2
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from gateway.api.app import create_app
from gateway.api.console import session as console_session
from gateway.services.postgres import PostgresProcess
from provisioning import licences
from provisioning.patients import patient_key
from tests.isolation_cases import (
    CA_PASSPHRASE,
    CASES,
    END_USER,
    EVENT_NOTE,
    NO_PRINCIPAL_DATA,
    Case,
)
from tests.support import SECRET, Fleet, bearer, seed, served
from tests.test_row_security import START, store_readings


@dataclass(frozen=True)
class World:
    """A database with both principals' data, and principal 20's ids and data markers."""

    url: str
    fleet: Fleet
    ids: dict[str, str]
    markers: dict[str, str]


def served_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the application answers, from its routes (also those left out of
    the OpenAPI document) and from the OpenAPI document."""
    found: set[tuple[str, str]] = set()

    def walk(routes: Iterable[Any]) -> None:
        for route in routes:
            nested = getattr(route, "effective_candidates", None)
            if callable(nested):
                walk(nested())
                continue
            path, methods = getattr(route, "path", None), getattr(route, "methods", None)
            if path is not None:
                found.update((m, path) for m in methods or {"GET"} if m not in {"HEAD",
                                                                                  "OPTIONS"})

    walk(app.routes)
    for path, operations in app.openapi()["paths"].items():
        found.update((method.upper(), path) for method in operations)
    return found


@pytest.fixture(scope="module")
def world(pg_server: PostgresProcess) -> Iterator[World]:
    # One database for the module: every case reads or is refused, so they can share it.
    name = f"test_isolation_{uuid.uuid4().hex[:12]}"
    url = pg_server.create_database(name)
    try:
        yield _build(url)
    finally:
        pg_server.drop_database(name)


def _build(url: str) -> World:
    fleet = seed(url)
    store_readings(url, fleet)
    with psycopg.connect(url) as conn:
        event = conn.execute(
            "INSERT INTO events (occurred_at, device_id, principal_code, type, data, channel,"
            " device_time, received_at) VALUES (%s, %s, '20', 'alarm.button', %s, 'status',"
            " true, %s) RETURNING id",
            (START.replace(hour=12), fleet.cuff, Jsonb({"note": EVENT_NOTE}), START),
        ).fetchone()
        first = conn.execute("SELECT min(id) FROM events WHERE principal_code = '20'"
                             ).fetchone()
        licences.add_vendor(conn, code="ISO-V", name="Vendor")
        licences.add_product(conn, article_number="ISO-ART", name="Cuff", product_class="bpm",
                             vendor="ISO-V")
        licences.add_terms(conn, code="ISO-TERMS", article_number="ISO-ART", period="monthly",
                           price=Decimal("10"), device_included=True, acquisition="rent",
                           device_price=None)
        licences.set_traceability(conn, device_id=fleet.cuff, article_number="ISO-ART",
                                  individual_number="ISO-1", actor="t")
        licence = licences.start_licence(conn, device_id=fleet.cuff, terms="ISO-TERMS",
                                         start_date=date(2026, 11, 1), actor="t")
        clients = [r[0] for r in conn.execute(
            "SELECT client_id FROM devices WHERE principal_code = '20'")]
        conn.execute("INSERT INTO orders (principal_code, order_id, patient_key, model,"
                     " ordered_at, imported_by) VALUES ('20', 'ISO-O1', %s, 'bpm', %s, 't')",
                     (patient_key(SECRET, "20", fleet.patient), START))
    assert event is not None and first is not None
    with TestClient(create_app(database_url=url, secret=SECRET)) as api:
        # Principal 20's own reads put its entries into the access log.
        read = api.get("/v1/observations", params={"patient": fleet.patient},
                       headers={**bearer("20"), "X-End-User": END_USER})
        assert read.status_code == 200, read.text
    ids = {"patient": fleet.patient, "hub": fleet.hub, "cuff": fleet.cuff,
           "unpaired": fleet.unpaired, "own_hub": fleet.other_hub, "own_cuff": fleet.other_cuff,
           "event": str(event[0]), "first_event": str(first[0]),
           "licence": str(licence["id"])}
    markers = {"principal 20's name": "Region Dalarna", "an event note": EVENT_NOTE,
               "an end user": END_USER, "the patient reference": fleet.patient,
               "the patient pseudonym": patient_key(SECRET, "20", fleet.patient),
               "hub": fleet.hub, "cuff": fleet.cuff, "unpaired device": fleet.unpaired}
    markers.update({f"client id {c}": c for c in clients})
    return World(url=url, fleet=fleet, ids=ids, markers=markers)


@pytest.fixture(scope="module")
def api(world: World) -> Iterator[TestClient]:
    app = create_app(database_url=world.url, secret=SECRET, ca_passphrase=CA_PASSPHRASE,
                     rate_limit=None)
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def routes() -> set[tuple[str, str]]:
    return served_routes(create_app(database_url="postgresql://unused/unused", secret=SECRET))


def _fill(template: Any, ids: dict[str, str]) -> Any:
    if isinstance(template, str):
        return template.format(**ids)
    if isinstance(template, dict):
        return {key: _fill(value, ids) for key, value in template.items()}
    return template


def _no_leak(world: World, sent: str, body: str, where: str) -> None:
    """Fail naming what of principal 20 shows in ``body`` that the caller did not send."""
    leaked = [what for what, value in world.markers.items() if value in body and value not in sent]
    assert not leaked, f"{where} shows principal 20's {', '.join(leaked)}: {body[:500]}"


def test_every_route_has_an_isolation_case(routes: set[tuple[str, str]]) -> None:
    missing = sorted(routes - CASES.keys() - NO_PRINCIPAL_DATA.keys())
    assert not missing, "route(s) without an isolation case: " + ", ".join(
        f"{m} {p}" for m, p in missing)


def test_every_case_names_a_served_route(routes: set[tuple[str, str]]) -> None:
    stale = sorted((CASES.keys() | NO_PRINCIPAL_DATA.keys()) - routes)
    assert not stale, "case(s) for missing route(s): " + ", ".join(f"{m} {p}" for m, p in stale)


def _cases() -> Iterator[Any]:
    for (method, route), cases in CASES.items():
        for number, case in enumerate(cases, 1):
            yield pytest.param(method, route, case, id=f"{method} {route} #{number}")


@pytest.mark.parametrize(("method", "route", "case"), list(_cases()))
def test_another_principals_ids_are_not_found(api: TestClient, world: World,
                                              routes: set[tuple[str, str]], method: str,
                                              route: str, case: Case) -> None:
    if (method, route) not in routes:
        pytest.fail(f"case for missing route {method} {route}")
    path, params = _fill(case.path, world.ids), _fill(case.params, world.ids)
    body, csv = _fill(case.json, world.ids), _fill(case.csv, world.ids)
    headers = bearer("2080", case.role)
    if case.console:
        response = _console_request(api, method, path, params, headers,
                                    _fill(case.form or {}, world.ids), csv)
    else:
        if csv is not None:
            headers["Content-Type"] = "text/csv"
        response = api.request(method, path, params=params, json=body, content=csv,
                               headers=headers)
    where = f"{method} {path} {params} as a {case.role} of 2080"
    assert response.status_code in case.expect, (
        f"{where}: expected {case.expect}, got {response.status_code}: {response.text[:500]}")
    if response.status_code == 200 and case.empty is not None:
        assert case.empty(response.json()), f"{where} is not empty: {response.text[:500]}"
    _no_leak(world, f"{path} {params} {body} {csv}", response.text, where)


def _console_request(api: TestClient, method: str, path: str, params: dict[str, str],
                     headers: dict[str, str], form: dict[str, str],
                     csv: str | None) -> httpx2.Response:
    """A console request of the bearer's session: its token as the console's cookie, and
    on a POST the session's CSRF token; redirects are answers of their own here."""
    token = headers.pop("Authorization").removeprefix("Bearer ")
    headers["Cookie"] = f"{console_session.COOKIE}={token}"
    if method != "POST":
        return api.request(method, path, params=params, headers=headers,
                           follow_redirects=False)
    data = {**form, "csrf": console_session.csrf_token(SECRET, token)}
    files = None if csv is None else {"file": ("fleet.csv", csv.encode(), "text/csv")}
    return api.request(method, path, params=params, headers=headers, data=data, files=files,
                       follow_redirects=False)


@pytest.mark.parametrize(("method", "route"), sorted(NO_PRINCIPAL_DATA))
def test_routes_without_ids_show_no_principals_data(api: TestClient, world: World,
                                                    routes: set[tuple[str, str]], method: str,
                                                    route: str) -> None:
    if (method, route) not in routes:
        pytest.fail(f"case for missing route {method} {route}")
    if method != "GET":
        return  # takes credentials of its own, not a principal's ids (see NO_PRINCIPAL_DATA)
    response = api.get(route, headers=bearer("2080"))
    assert response.status_code in (200, 503), f"GET {route}: {response.status_code}"
    _no_leak(world, "", response.text, f"GET {route}")


def _events_until(response: httpx2.Response, last_id: str) -> list[tuple[str, str]]:
    """(id, data) of each event up to and including ``last_id``; the read timeout fails it."""
    seen: list[tuple[str, str]] = []
    event_id = ""
    for line in response.iter_lines():
        if line.startswith("id:"):
            event_id = line.removeprefix("id:").strip()
        elif line.startswith("data:") and event_id:
            seen.append((event_id, line.removeprefix("data:").strip()))
            if event_id == last_id:
                return seen
            event_id = ""
    raise AssertionError(f"the stream ended before event {last_id}: {seen}")


def test_the_event_stream_is_isolated(world: World, routes: set[tuple[str, str]]) -> None:
    if ("GET", "/v1/events/stream") not in routes:
        pytest.fail("case for missing route GET /v1/events/stream")
    with psycopg.connect(world.url) as conn:
        # 2080's newest event comes after every event of 20, so a replay must pass 20's by.
        row = conn.execute(
            "INSERT INTO events (occurred_at, device_id, principal_code, type, data, channel,"
            " device_time, received_at) VALUES (%s, %s, '2080', 'alarm.button', '{}', 'status',"
            " true, %s) ON CONFLICT DO NOTHING RETURNING id",
            (START.replace(hour=13), world.fleet.other_cuff, START)).fetchone()
        newest = conn.execute("SELECT max(id) FROM events WHERE principal_code = '2080'"
                              ).fetchone()
    assert newest is not None and (row is None or row[0] == newest[0])
    last = str(newest[0])
    app = create_app(database_url=world.url, secret=SECRET, rate_limit=None)
    attempts = [({"after_id": "0"}, {}),
                ({}, {"Last-Event-ID": str(int(world.ids["event"]) - 1)})]
    with served(app) as base, httpx2.Client(timeout=httpx2.Timeout(10.0)) as http:
        for params, extra in attempts:
            with http.stream("GET", f"{base}/v1/events/stream", params=params,
                             headers={**bearer("2080"), **extra}) as response:
                where = f"GET /v1/events/stream {params} {extra} as a clinician of 2080"
                assert response.status_code == 200, f"{where}: {response.read()!r}"
                seen = _events_until(response, last)
            own = {world.fleet.other_hub, world.fleet.other_cuff}
            for event_id, data in seen:
                assert any(device in data for device in own), f"{where}: event {event_id} {data}"
                _no_leak(world, "", data, where)
