"""The principal, catalogue, licence, bulk and Sesam CSV routes over a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.api.provisioning_licences import CSV_LIMIT
from gateway.auth import Role
from tests.support import SECRET, Fleet, bearer, seed

PASSPHRASE = b"p" * 24
TECH_20 = bearer("20", Role.TECHNICIAN)
TECH_2080 = bearer("2080", Role.TECHNICIAN)
ADMIN = bearer("20", Role.ADMIN)
CLINICIAN = bearer("20", Role.CLINICIAN)
AUDITOR = bearer("20", Role.AUDITOR)
CSV = {"Content-Type": "text/csv"}


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed(database_url)  # seed runs gateway.db.migrate first


@pytest.fixture
def client(database_url: str, fleet: Fleet) -> Iterator[TestClient]:
    app = create_app(database_url=database_url, secret=SECRET, ca_passphrase=PASSPHRASE)
    with TestClient(app) as api:
        yield api


def _catalogue(client: TestClient) -> None:
    for path, body in (
        ("/v1/vendors", {"code": "acme", "name": "Acme Medical"}),
        ("/v1/products", {"article_number": "A100", "name": "Cuff", "product_class": "bpm",
                          "vendor": "acme"}),
        ("/v1/licence-terms", {"code": "T1", "article_number": "A100", "period": "monthly",
                               "price": "99.50", "device_included": True,
                               "acquisition": "rent"}),
    ):
        response = client.post(path, json=body, headers=ADMIN)
        assert response.status_code == 201, (path, response.text)


def _trace(client: TestClient, device: str, headers: dict[str, str]) -> int:
    text = f"device_id,article_number,individual_number\n{device},A100,I-{device}\n"
    return client.post("/v1/devices/traceability.csv", content=text,
                       headers={**headers, **CSV}).status_code


def test_principals_admin_creates_and_lists_all_technician_sees_its_own(
        client: TestClient) -> None:
    made = client.post("/v1/principals", json={"code": "30", "name": "Region Test",
                                               "device_auth": "password"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    assert made.json()["code"] == "30"
    again = client.post("/v1/principals", json={"code": "30", "name": "x"}, headers=ADMIN)
    assert again.status_code == 409
    listed = client.get("/v1/principals", headers=ADMIN).json()["items"]
    assert [p["code"] for p in listed] == ["20", "2080", "30"]
    own = client.get("/v1/principals", headers=TECH_20).json()["items"]
    assert [p["code"] for p in own] == ["20"]
    refused = client.post("/v1/principals", json={"code": "31", "name": "y"}, headers=TECH_20)
    assert refused.status_code == 403


def test_catalogue_is_admin_only_and_terms_keep_exact_prices(client: TestClient) -> None:
    for path, body in (("/v1/vendors", {"code": "v", "name": "V"}),
                       ("/v1/products", {"article_number": "A1", "name": "P",
                                         "product_class": "bpm", "vendor": "v"}),
                       ("/v1/licence-terms", {"code": "T", "article_number": "A1",
                                              "period": "monthly", "price": "1.00",
                                              "device_included": True,
                                              "acquisition": "rent"})):
        assert client.post(path, json=body, headers=TECH_20).status_code == 403, path
    vendor = client.post("/v1/vendors", json={"code": "acme", "name": "Acme"}, headers=ADMIN)
    assert vendor.json() == {"code": "acme", "name": "Acme"}
    missing = client.post("/v1/products", json={"article_number": "A9", "name": "P",
                                                "product_class": "bpm", "vendor": "nobody"},
                          headers=ADMIN)
    assert missing.status_code == 404 and "nobody" in missing.json()["detail"]
    _catalogue_rest = client.post(
        "/v1/products", json={"article_number": "A100", "name": "Cuff",
                              "product_class": "bpm", "vendor": "acme"}, headers=ADMIN)
    assert _catalogue_rest.status_code == 201
    terms = client.post("/v1/licence-terms", json={
        "code": "T1", "article_number": "A100", "period": "monthly", "price": "99.50",
        "device_included": True, "acquisition": "rent"}, headers=ADMIN)
    assert terms.status_code == 201, terms.text
    assert '"price": 99.50' in terms.text or '"price":99.50' in terms.text
    bad = client.post("/v1/licence-terms", json={
        "code": "T2", "article_number": "A100", "period": "weekly", "price": "1",
        "device_included": True, "acquisition": "rent"}, headers=ADMIN)
    assert bad.status_code == 422 and "period" in bad.json()["detail"]


def test_clinician_and_auditor_are_refused_everywhere(client: TestClient, fleet: Fleet) -> None:
    routes: list[tuple[str, str, dict[str, object] | None]] = [
        ("GET", "/v1/principals", None),
        ("POST", "/v1/principals", {"code": "40", "name": "n"}),
        ("POST", "/v1/vendors", {"code": "v", "name": "V"}),
        ("GET", "/v1/licences", None),
        ("POST", "/v1/licences", {"device_id": fleet.cuff, "terms": "T1",
                                  "start_date": "2026-01-01"}),
        ("POST", "/v1/licences/1/end", {"end_date": "2026-02-01", "reason": "r"}),
        ("GET", "/v1/devices.csv", None),
    ]
    for headers in (CLINICIAN, AUDITOR):
        for method, path, body in routes:
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 403, (method, path, response.text)
        bulk = client.post("/v1/devices/bulk", content="principal,model,serial\n",
                           headers={**headers, **CSV})
        assert bulk.status_code == 403


def test_licence_lifecycle_for_a_technician(client: TestClient, fleet: Fleet) -> None:
    _catalogue(client)
    assert _trace(client, fleet.unpaired, TECH_20) == 200
    started = client.post("/v1/licences", json={
        "device_id": fleet.unpaired, "terms": "T1", "start_date": "2026-01-01",
        "unit": "Home care north"}, headers=TECH_20)
    assert started.status_code == 201, started.text
    licence = started.json()
    assert licence["principal"] == "20" and licence["end_date"] is None
    overlap = client.post("/v1/licences", json={
        "device_id": fleet.unpaired, "terms": "T1", "start_date": "2026-03-01"},
        headers=TECH_20)
    assert overlap.status_code == 409
    # A device without the product's article number cannot hold its licence.
    wrong = client.post("/v1/licences", json={
        "device_id": fleet.cuff, "terms": "T1", "start_date": "2026-01-01"}, headers=TECH_20)
    assert wrong.status_code == 409
    other_payer = client.post("/v1/licences", json={
        "device_id": fleet.unpaired, "terms": "T1", "start_date": "2027-01-01",
        "principal": "2080"}, headers=TECH_20)
    assert other_payer.status_code == 403

    listed = client.get("/v1/licences", headers=TECH_20).json()["items"]
    assert [item["id"] for item in listed] == [licence["id"]]
    by_device = client.get(f"/v1/licences?device={fleet.unpaired}", headers=ADMIN)
    assert [item["id"] for item in by_device.json()["items"]] == [licence["id"]]
    assert client.get("/v1/licences?principal=2080", headers=ADMIN).json()["items"] == []
    assert client.get("/v1/licences?principal=2080", headers=TECH_20).status_code == 403

    # Another principal's technician cannot see or end it.
    assert client.get("/v1/licences", headers=TECH_2080).json()["items"] == []
    hidden = client.post(f"/v1/licences/{licence['id']}/end",
                         json={"end_date": "2026-06-30", "reason": "x"}, headers=TECH_2080)
    assert hidden.status_code == 404
    before = client.post(f"/v1/licences/{licence['id']}/end",
                         json={"end_date": "2025-12-31", "reason": "x"}, headers=TECH_20)
    assert before.status_code == 422
    ended = client.post(f"/v1/licences/{licence['id']}/end",
                        json={"end_date": "2026-06-30", "reason": "contract ended"},
                        headers=TECH_20)
    assert ended.status_code == 200, ended.text
    assert ended.json()["end_date"] == "2026-06-30"
    assert client.post("/v1/licences/999999/end", json={"end_date": "2026-06-30",
                                                        "reason": "x"},
                       headers=ADMIN).status_code == 404


def test_admin_licence_defaults_payer_to_device_owner(client: TestClient, fleet: Fleet) -> None:
    _catalogue(client)
    assert _trace(client, fleet.other_cuff, ADMIN) == 200
    started = client.post("/v1/licences", json={
        "device_id": fleet.other_cuff, "terms": "T1", "start_date": "2026-01-01"},
        headers=ADMIN)
    assert started.status_code == 201, started.text
    assert started.json()["principal"] == "2080"


def test_another_principals_device_is_not_found(client: TestClient, fleet: Fleet) -> None:
    _catalogue(client)
    licence = client.post("/v1/licences", json={
        "device_id": fleet.other_cuff, "terms": "T1", "start_date": "2026-01-01"},
        headers=TECH_20)
    assert licence.status_code == 404
    assert licence.json()["detail"] == f"device {fleet.other_cuff} not found"
    listed = client.get(f"/v1/licences?device={fleet.other_cuff}", headers=TECH_20)
    assert listed.status_code == 404
    assert _trace(client, fleet.other_cuff, TECH_20) == 404
    traced = client.post(
        "/v1/devices/traceability.csv",
        content=f"device_id,article_number,individual_number\n{fleet.other_cuff},A100,I1\n",
        headers={**TECH_20, **CSV})
    assert traced.json()["detail"].startswith("line 2, column device_id:")


def test_bulk_refuses_another_principals_row_only(
        client: TestClient, database_url: str) -> None:
    text = ("principal,model,serial\n"
            "20,bpm,B1\n"
            "2080,bpm,B2\n"
            "20,bpm,B3\n")
    response = client.post("/v1/devices/bulk", content=text, headers={**TECH_20, **CSV})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["counts"] == {"rows": 3, "onboarded": 2, "refused": 1}
    assert [d["serial"] for d in body["onboarded"]] == ["B1", "B3"]
    assert all(d["mqtt_password"] for d in body["onboarded"])
    [refusal] = body["refused"]
    assert refusal["line"] == 3 and refusal["serial"] == "B2"
    assert "2080" in refusal["reason"]
    with psycopg.connect(database_url) as conn:
        serials = {row[0] for row in conn.execute(
            "SELECT serial FROM devices WHERE serial LIKE 'B%'")}
    assert serials == {"B1", "B3"}


def test_bulk_line_numbers_and_admin_rows_for_any_principal(client: TestClient) -> None:
    text = ("principal,model,serial\n"
            "2080,bpm,\"D\n1\"\n"  # a quoted newline: the record spans lines 2 and 3
            "20,bpm,C1\n")          # already onboarded by the seed: a duplicate on line 4
    tech = client.post("/v1/devices/bulk", content=text, headers={**TECH_20, **CSV}).json()
    assert [(r["line"], r["reason"].split(":")[1].strip()) for r in tech["refused"]] == [
        (3, "refused"), (4, "duplicate")]
    admin = client.post("/v1/devices/bulk", content="principal,model,serial\n2080,bpm,D2\n",
                        headers={**ADMIN, **CSV}).json()
    assert admin["counts"] == {"rows": 1, "onboarded": 1, "refused": 0}
    assert "PRIVATE KEY" in admin["onboarded"][0]["private_key_pem"]


def test_bulk_body_limits(client: TestClient) -> None:
    big = "principal,model,serial\n" + "x" * CSV_LIMIT
    too_large = client.post("/v1/devices/bulk", content=big, headers={**TECH_20, **CSV})
    assert too_large.status_code == 413
    assert "5 MB" in too_large.json()["detail"]
    untyped = client.post("/v1/devices/bulk", content="principal,model,serial\n",
                          headers={**TECH_20, "Content-Type": "application/json"})
    assert untyped.status_code == 415
    bad_header = client.post("/v1/devices/bulk", content="principal,colour\n",
                             headers={**TECH_20, **CSV})
    assert bad_header.status_code == 422 and "colour" in bad_header.json()["detail"]


def test_devices_csv_export_is_scoped_and_round_trips(client: TestClient, fleet: Fleet) -> None:
    _catalogue(client)
    assert _trace(client, fleet.cuff, TECH_20) == 200
    exported = client.get("/v1/devices.csv", headers=TECH_20)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    text = exported.text
    assert fleet.cuff in text and fleet.other_cuff not in text
    assert f"I-{fleet.cuff}" in text
    everything = client.get("/v1/devices.csv", headers=ADMIN).text
    assert fleet.other_cuff in everything
    again = client.post("/v1/devices/traceability.csv", content=text,
                        headers={**TECH_20, **CSV})
    assert again.status_code == 200, again.text
    assert again.json() == {"lines": 3, "changed": 0}
