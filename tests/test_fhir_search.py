"""FHIR Observation search over a real PostgreSQL: codes that find panels, date prefixes at
their boundaries, device searches, sorting, paging by reading, the date-range cap and the
refusal of parameters it does not support."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from provisioning.patients import patient_key
from tests.fhir_support import LOINC, MDC, URL, error, hourly, loinc, resources, search
from tests.support import SECRET, Fleet, api_client, bearer, count, seed


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed(database_url)


@pytest.fixture
def client(database_url: str, fleet: Fleet) -> Iterator[TestClient]:
    with api_client(database_url) as api:
        yield api


def test_code_search_finds_the_panel_by_its_own_or_a_component_code(
        client: TestClient, fleet: Fleet, database_url: str) -> None:
    hourly(database_url, fleet, 1)
    for code in (f"{LOINC}|85354-9", f"{LOINC}|8480-6", f"{MDC}|150021", f"{MDC}|150020",
                 "8462-4", "150023"):
        found = [loinc(r) for r in resources(search(client, fleet, code=code))]
        assert found == ["85354-9"], code
    assert [loinc(r) for r in resources(search(client, fleet, code="8867-4"))] == ["8867-4"]
    both = search(client, fleet, code=f"{LOINC}|8867-4,{MDC}|150022")
    assert sorted(loinc(r) for r in resources(both)) == ["85354-9", "8867-4"]
    assert resources(search(client, fleet, code=f"{LOINC}|29463-7")) == []


@pytest.mark.parametrize(("dates", "hours"), [
    (["ge2026-11-01T09:00:00Z"], [10, 9]),
    (["gt2026-11-01T09:00:00Z"], [10]),
    (["le2026-11-01T09:00:00Z"], [9, 8]),
    (["lt2026-11-01T09:00:00Z"], [8]),
    (["2026-11-01T09:00:00Z"], [9]),
    (["eq2026-11-01"], [10, 9, 8]),
    (["gt2026-11-01"], []),
    (["lt2026-11-01"], []),
    (["ge2026-11-01T08:30:00+01:00", "lt2026-11-01T10:00:00Z"], [9, 8]),
    (["ge2026-11-01T08:00:00.5Z"], [10, 9]),
])
def test_date_prefixes_at_their_boundaries(client: TestClient, fleet: Fleet, database_url: str,
                                           dates: list[str], hours: list[int]) -> None:
    hourly(database_url, fleet, 3)
    body = search(client, fleet, code="85354-9", date=dates)
    assert [int(r["effectiveDateTime"][11:13]) for r in resources(body)] == hours


def test_device_search_with_or_without_a_subject(client: TestClient, fleet: Fleet,
                                                 database_url: str) -> None:
    hourly(database_url, fleet, 2)
    key = patient_key(SECRET, "20", fleet.patient)
    for device in (f"Device/{fleet.cuff}", fleet.cuff):
        response = client.get(URL, params={"device": device}, headers=bearer("20"))
        found = resources(response.json())
        assert len(found) == 4
        # Without a subject the caller's reference is unknown: the pseudonym stands in.
        assert found[0]["subject"] == {"identifier": {
            "system": "urn:aidlink:patient-pseudonym", "value": key}}
    both = search(client, fleet, device=fleet.cuff, code="85354-9")
    assert [r["subject"]["reference"] for r in resources(both)] == [
        f"Patient/{fleet.patient}"] * 2
    assert resources(search(client, fleet, device=fleet.unpaired)) == []
    foreign = client.get(URL, params={"device": fleet.cuff}, headers=bearer("2080")).json()
    assert "entry" not in foreign
    assert count(database_url, "SELECT count(*) FROM access_log WHERE patient_key = %s AND"
                 " action = 'fhir.Observation.search'", key) == 4


def test_sort_accepts_date_either_way_and_names_what_is_allowed(
        client: TestClient, fleet: Fleet, database_url: str) -> None:
    hourly(database_url, fleet, 3)
    newest = search(client, fleet, code="85354-9", _sort="-date")
    oldest = search(client, fleet, code="85354-9", _sort="date")
    assert [r["id"] for r in resources(oldest)] == [r["id"] for r in resources(newest)][::-1]
    for bad in ("value", "-_lastUpdated", "date,-date"):
        response = client.get(URL, headers=bearer("20"),
                              params={"subject": fleet.patient, "_sort": bad})
        assert "use -date (newest first, the default) or date" in error(response, 400)


@pytest.mark.parametrize("sort", ["-date", "date"])
def test_paging_walks_every_reading_once_and_never_splits_a_panel(
        client: TestClient, fleet: Fleet, database_url: str, sort: str) -> None:
    # Seven cuff readings: seven panels and seven pulse rates sharing their times, so pages
    # of three end inside a moment, between a panel and its pulse.
    hourly(database_url, fleet, 7)
    everything = [r["id"] for r in resources(search(client, fleet, _count=100, _sort=sort))]
    assert len(everything) == 14
    walked: list[str] = []
    body = search(client, fleet, _count=3, _sort=sort)
    pages = 1
    while True:
        page = resources(body)
        assert 1 <= len(page) <= 3
        for resource in page:
            if loinc(resource) == "85354-9":
                assert len(resource["component"]) == 3
        walked.extend(r["id"] for r in page)
        links = {link["relation"]: link["url"] for link in body["link"]}
        if "next" not in links:
            break
        response = client.get(links["next"], headers=bearer("20"))
        assert response.status_code == 200, response.text
        body = response.json()
        Bundle.model_validate(body)
        pages += 1
    assert pages == 5
    assert walked == everything


def _walk(api: TestClient, fleet: Fleet, count: int) -> list[dict[str, Any]]:
    """Every resource of the patient's search, page by page through the next links."""
    body = search(api, fleet, _count=count)
    walked = resources(body)
    while next_url := {link["relation"]: link["url"] for link in body["link"]}.get("next"):
        response = api.get(next_url, headers=bearer("20"))
        assert response.status_code == 200, response.text
        body = response.json()
        walked.extend(resources(body))
    return walked


@pytest.mark.parametrize("zone", ["Europe/Stockholm", "Etc/UTC", "America/St_Johns"])
def test_the_servers_time_zone_changes_no_resource_and_no_page(
        fleet: Fleet, database_url: str, zone: str) -> None:
    # Rows are read in UTC whatever the session's zone (or with the zone renamed 'UTC' when
    # it is UTC by another name); a cursor written in the session's zone must still page
    # through every reading once.
    hourly(database_url, fleet, 5)
    with api_client(database_url) as api:
        expected = resources(search(api, fleet, _count=100))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET timezone TO {}").format(
            sql.Identifier(str(conninfo_to_dict(database_url)["dbname"])), sql.Literal(zone)))
    with api_client(database_url) as api:
        assert resources(search(api, fleet, _count=100)) == expected
        assert _walk(api, fleet, 3) == expected
    assert len(expected) == 10
    assert all(r["effectiveDateTime"].endswith(":00Z") for r in expected)


def test_a_cursor_is_tied_to_its_sort_order(client: TestClient, fleet: Fleet,
                                            database_url: str) -> None:
    hourly(database_url, fleet, 2)
    first = search(client, fleet, _count=1)
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    response = client.get(next_url + "&_sort=date", headers=bearer("20"))
    assert "_sort" in error(response, 400)  # _sort is now given twice
    cursor = next_url.split("_cursor=")[1]
    response = client.get(URL, headers=bearer("20"), params={
        "subject": fleet.patient, "_sort": "date", "_cursor": cursor})
    assert "issued for _sort=-date" in error(response, 400)


def test_date_ranges_are_capped_at_366_days(client: TestClient, fleet: Fleet) -> None:
    ok = search(client, fleet, date=["ge2025-11-01", "lt2026-11-02"])
    assert ok["type"] == "searchset"
    too_long = client.get(URL, headers=bearer("20"), params={
        "subject": fleet.patient, "date": ["ge2025-11-01", "le2026-11-02"]})
    assert "at most 366 days" in error(too_long, 400)
    open_ended = client.get(URL, headers=bearer("20"), params={
        "subject": fleet.patient, "date": "ge2020-01-01"})
    assert "now (no upper bound given)" in error(open_ended, 400)
    plain = client.get("/v1/observations", headers=bearer("20"), params={
        "patient": fleet.patient, "since": "2020-01-01T00:00:00Z"})
    assert plain.status_code == 400
    assert "at most 366 days" in plain.json()["detail"]


def test_bad_parameters_are_named_in_operation_outcomes(client: TestClient,
                                                        fleet: Fleet) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"subject": fleet.patient, "foo": "1", "bar": "2"}, "unknown search parameter bar, foo"),
        ({"subject": fleet.patient, "code:text": "x"}, "unknown search parameter code:text"),
        ({"subject": [fleet.patient, "x"]}, "subject is given 2 times"),
        ({"subject": "Group/1"}, "subject must be Patient/{id}"),
        ({"device": "Device/bad id!"}, "device id"),
        ({}, "give subject (Patient/{ref}) or device"),
        ({"subject": fleet.patient, "_count": "1001"}, "_count must be a whole number"),
        ({"subject": fleet.patient, "code": "http://snomed.info/sct|1"}, "code system"),
        ({"subject": fleet.patient, "code": "abc"}, "neither a LOINC code"),
        ({"subject": fleet.patient, "date": "ne2026-11-01"}, "date prefix 'ne'"),
        ({"subject": fleet.patient, "date": "2026-11-01T10:00:00"}, "needs a zone offset"),
        ({"subject": fleet.patient, "_cursor": "garbage"}, "_cursor is not valid"),
    ]
    for params, words in cases:
        response = client.get(URL, params=params, headers=bearer("20"))
        assert words in error(response, 400), params
    ignored = client.get(URL, headers=bearer("20"),
                         params={"subject": fleet.patient, "_format": "json", "_pretty": "true"})
    assert ignored.status_code == 200
