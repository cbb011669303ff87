"""Helpers of the in-process console tests: the fixtures of a seeded fleet and an app client
(each test module binds them by name), OAuth clients of a principal, and logging in through
the console's own login form with its CSRF field."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.auth import Role
from provisioning import api_clients
from tests.support import SECRET, Fleet, seed

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
