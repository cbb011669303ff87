"""Prometheus metrics of both processes, scraped over HTTP from a real API and a real
``aidlink gateway``, with the fleet gauges read from a real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx2
import psycopg
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from gateway.api.app import create_app
from gateway.api.sse import configure_streams, stream_slots
from gateway.fleet_metrics import FleetCollector, FleetMetrics
from gateway.ingest import supervision
from gateway.ingest.store import BatchStore, Incoming
from gateway.services.mosquitto import MosquittoProcess
from gateway.services.postgres import find_free_port
from provisioning import licences
from simulators.bpm import BpReading, encode
from simulators.hub import Hub
from tests.support import (
    SECRET,
    Fleet,
    api_client,
    bearer,
    count,
    running_gateway,
    seed,
    served,
    wait_for,
)

AIDLINK = str(Path(sys.executable).parent / "aidlink")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# Every stable name a process exports, with the label names of its samples (histograms: of
# their _bucket samples, le included).
INGEST_NAMES = {
    "aidlink_ingest_messages_total": {"result"},
    "aidlink_observations_stored_total": set(),
    "aidlink_dead_letters_total": {"reason"},
    "aidlink_ingest_latency_seconds_bucket": {"le"},
    "aidlink_batch_rows_bucket": {"le"},
}
FLEET_NAMES = {"aidlink_devices_online": {"principal"},
               "aidlink_licences_expiring": {"principal"}}
HTTP_NAMES = {"aidlink_http_requests_total": {"method", "route", "status"},
              "aidlink_http_request_duration_seconds_bucket": {"method", "route", "le"}}


def samples(text: str) -> Samples:
    """Every sample of an exposition by name and label set."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float | None:
    """One sample's value, None when the exposition lacks it."""
    return found.get((name, frozenset(labels.items())))


def label_names(found: Samples) -> dict[str, set[str]]:
    """The label names each sample name is exported with (the union over its samples)."""
    names: dict[str, set[str]] = {}
    for name, labels in found:
        names.setdefault(name, set()).update(k for k, _ in labels)
    return names


def reading(fleet: Fleet, at: datetime) -> Incoming:
    """A blood pressure reading from the cuff through its hub."""
    payload = encode(BpReading(systolic=Decimal(120), diastolic=Decimal(80), mean=Decimal(93),
                               measured_at=at.replace(microsecond=0)))
    return Incoming(topic=f"aidlink/v1/{fleet.hub}/{fleet.cuff}/ble/2a35", payload=payload,
                    received_at=at)


def fleet_gauges(url: str) -> Samples:
    """The fleet gauges read now (no cache)."""
    return samples(FleetMetrics(database_url=url, ttl_s=0).exposition().decode())


def test_api_metrics_carry_every_stable_name_with_its_labels(
        database_url: str, mosquitto: MosquittoProcess) -> None:
    fleet = seed(database_url)
    # Counters exist once something counted them: one stored message, one dead letter,
    # through the real pipeline of this process.
    good = reading(fleet, datetime.now(UTC))
    with running_gateway(database_url, mosquitto.url) as gateway:
        assert gateway.submit(good.topic, good.payload).result(10)
        assert gateway.submit(f"aidlink/v1/{fleet.hub}/{fleet.cuff}/ble/2a35",
                              b"\x00").result(10)
    with api_client(database_url) as client:
        assert client.get("/fhir/r4/metadata").status_code == 200
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    names = label_names(found)
    for name, labels in {**INGEST_NAMES, **FLEET_NAMES, **HTTP_NAMES}.items():
        assert names.get(name) == labels, f"{name}: {names.get(name)} instead of {labels}"
    assert value(found, "aidlink_devices_online", principal="20") == 2
    assert value(found, "aidlink_devices_online", principal="2080") == 0
    assert value(found, "aidlink_licences_expiring", principal="2080") == 0
    assert (value(found, "aidlink_http_requests_total", method="GET",
                  route="/fhir/r4/metadata", status="200") or 0) >= 1
    assert "within 30 days" in response.text


def test_gateway_process_serves_its_metrics_and_json_logs(
        database_url: str, mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    fleet = seed(database_url)
    port = find_free_port()
    env = {**os.environ, "AIDLINK_DATABASE_URL": database_url, "AIDLINK_MQTT_URL":
           mosquitto.url, "AIDLINK_SECRET": SECRET.decode(), "AIDLINK_LOG_FORMAT": "json"}
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([AIDLINK, "gateway", "--health-port", str(port)],
                                   env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_for(lambda: _get(port, "/healthz"), timeout=20,
                 what=f"the gateway's health port ({log_path.read_text()})")
        wait_for(lambda: "gateway connected" in log_path.read_text(), timeout=20,
                 what="the gateway to connect")
        hub = Hub(mosquitto.url, fleet.hub)
        hub.connect()
        try:
            hub.publish(fleet.cuff, "ble/2a35", reading(fleet, datetime.now(UTC)).payload)
            hub.publish(fleet.cuff, "ble/2a35", b"\x00")
        finally:
            hub.close()
        wait_for(lambda: count(database_url, "SELECT count(*) FROM dead_letters") == 1
                 and count(database_url, "SELECT count(*) FROM observations") > 0,
                 what="a stored reading and a dead letter")
        text = _get(port, "/metrics")
    finally:
        process.terminate()
        process.wait(timeout=15)
    found = samples(text)
    names = label_names(found)
    for name, labels in {**INGEST_NAMES, **FLEET_NAMES}.items():
        assert names.get(name) == labels, f"{name}: {names.get(name)} instead of {labels}"
    assert value(found, "aidlink_ingest_messages_total", result="stored") == 1
    assert value(found, "aidlink_dead_letters_total", reason="decode_error") == 1
    assert value(found, "aidlink_devices_online", principal="20") == 2
    assert value(found, "aidlink_devices_online", principal="2080") == 0
    # The gateway serves no HTTP API, so it has no request metrics to export.
    assert not any(name.startswith("aidlink_http_") for name in names)
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    rejected = [line for line in lines if line["message"].startswith("rejected ble/2a35")]
    assert len(rejected) == 1
    assert {k: rejected[0][k] for k in ("level", "logger", "device", "principal",
                                        "client_id")} == {
        "level": "INFO", "logger": "gateway.ingest.plan", "device": fleet.cuff,
        "principal": "20", "client_id": fleet.hub}
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)


def _get(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def test_devices_online_follows_devices_going_offline_and_back(database_url: str) -> None:
    fleet = seed(database_url)
    assert value(fleet_gauges(database_url), "aidlink_devices_online", principal="20") == 0
    heard = datetime.now(UTC) - timedelta(days=2)
    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)
        store.write([reading(fleet, heard)])
        online = fleet_gauges(database_url)
        # The same rule as supervision's: silent past the interval is offline.
        supervision.sweep(conn, heard + timedelta(hours=25))
        conn.commit()
        offline = fleet_gauges(database_url)
        store.write([reading(fleet, datetime.now(UTC))])
        back = fleet_gauges(database_url)
        # A retired device does not count, whatever its last state says.
        conn.execute("UPDATE devices SET state = 'retired' WHERE id = %s", (fleet.hub,))
        conn.commit()
        retired = fleet_gauges(database_url)
    assert [value(g, "aidlink_devices_online", principal="20")
            for g in (online, offline, back, retired)] == [2, 0, 2, 1]
    assert {value(g, "aidlink_devices_online", principal="2080")
            for g in (online, offline, back, retired)} == {0}


@pytest.fixture
def licensed(database_url: str) -> Iterator[tuple[Fleet, int]]:
    """The seeded fleet, its cuff holding a licence that ends in 60 days."""
    fleet = seed(database_url)
    today = datetime.now(ZoneInfo("Europe/Stockholm")).date()
    with psycopg.connect(database_url) as conn:
        licences.add_vendor(conn, code="V", name="Vendor")
        licences.add_product(conn, article_number="717171", name="Cuff",
                             product_class="bpm", vendor="V")
        licences.add_terms(conn, code="T", article_number="717171", period="monthly",
                           price=Decimal("100.00"), device_included=True, acquisition="rent")
        licences.set_traceability(conn, device_id=fleet.cuff, article_number="717171",
                                  individual_number="1", actor="t")
        row = licences.start_licence(conn, device_id=fleet.cuff, terms="T", actor="t",
                                     start_date=today - timedelta(days=10),
                                     end_date=today + timedelta(days=60))
    yield fleet, int(row["id"])


@pytest.mark.parametrize(("days_left", "expiring"), [(60, 0), (31, 0), (30, 1), (0, 1)])
def test_licences_expiring_counts_a_licence_once_its_end_is_within_30_days(
        database_url: str, licensed: tuple[Fleet, int], days_left: int, expiring: int) -> None:
    _, licence = licensed
    today = datetime.now(ZoneInfo("Europe/Stockholm")).date()
    with psycopg.connect(database_url) as conn:
        licences.end_licence(conn, licence_id=licence, end_date=today + timedelta(days_left),
                             actor="t", reason="test")
    found = fleet_gauges(database_url)
    assert value(found, "aidlink_licences_expiring", principal="20") == expiring
    # Principals without any stay on the dashboard, at zero.
    assert value(found, "aidlink_licences_expiring", principal="2080") == 0


def test_fleet_gauges_are_read_at_most_once_per_ttl(database_url: str) -> None:
    fleet = seed(database_url)
    now = [1000.0]
    collector = FleetCollector(database_url=database_url, ttl_s=15, clock=lambda: now[0])
    first = collector.snapshot()
    with psycopg.connect(database_url) as conn:
        BatchStore(conn).write([reading(fleet, datetime.now(UTC))])
    now[0] += 14.9
    cached = collector.snapshot()
    now[0] += 0.1
    fresh = collector.snapshot()
    assert first is not None and cached is not None and fresh is not None
    assert (first.online["20"], cached.online["20"], fresh.online["20"]) == (0, 0, 2)


def test_an_unreachable_database_leaves_the_gauges_out_but_not_the_scrape() -> None:
    # Nothing listens there: a real connection failure.
    url = f"postgresql://aidlink@127.0.0.1:{find_free_port()}/none"
    fleet = FleetMetrics(database_url=url, ttl_s=15)
    before = _failures()
    first = samples(fleet.exposition().decode())
    assert value(first, "aidlink_fleet_metrics_failures_total") == before + 1
    names = label_names(first)
    assert "aidlink_devices_online" not in names
    assert "aidlink_licences_expiring" not in names
    # The rest of the scrape is whole: the process's own metrics are there.
    assert "aidlink_batch_rows_bucket" in names
    # Counted once: the failed read is cached like a good one, not retried every scrape.
    again = samples(fleet.exposition().decode())
    assert value(again, "aidlink_fleet_metrics_failures_total") == before + 1


def _failures() -> float:
    return REGISTRY.get_sample_value("aidlink_fleet_metrics_failures_total") or 0.0


def test_requests_are_labelled_by_route_template_never_by_path(database_url: str) -> None:
    seed(database_url)
    personnummer = "19121212-1212"
    with api_client(database_url) as client:
        before = samples(client.get("/metrics").text)
        headers = bearer("20")
        client.get(f"/fhir/r4/Patient/{personnummer}", headers=headers)
        client.get("/fhir/r4/Observation", params={"subject": f"Patient/{personnummer}"},
                   headers=headers)
        assert client.get(f"/no/such/{personnummer}").status_code == 404
        assert client.delete("/fhir/r4/metadata").status_code == 405
        text = client.get("/metrics").text
    after = samples(text)

    def grew(**labels: str) -> float:
        name = "aidlink_http_requests_total"
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    patient_route = {"method": "GET", "route": "/fhir/r4/Patient/{ref}"}
    statuses = {s for (n, labels) in after if n == "aidlink_http_requests_total"
                for k, s in labels if k == "status" and (
                    ("route", patient_route["route"]) in labels)}
    assert statuses, "no sample for the Patient route template"
    assert sum(grew(**patient_route, status=s) for s in statuses) == 1
    assert grew(method="GET", route="/fhir/r4/Observation", status="200") == 1
    assert grew(method="GET", route="unmatched", status="404") == 1
    assert grew(method="DELETE", route="/fhir/r4/metadata", status="405") == 1
    assert (value(after, "aidlink_http_request_duration_seconds_count", **patient_route) or 0) >= 1
    assert "19121212" not in text
    assert "1212-1212" not in text


def test_an_event_stream_streams_and_is_counted_when_it_ends(database_url: str) -> None:
    seed(database_url)
    app = create_app(database_url=database_url, secret=SECRET)
    configure_streams(app, poll_interval=0.05, heartbeat=0.2)
    labels = {"method": "GET", "route": "/v1/events/stream", "status": "200"}
    with served(app) as base:
        before = value(samples(_text(base)), "aidlink_http_requests_total", **labels) or 0
        with httpx2.Client(timeout=10.0) as client, client.stream(
                "GET", f"{base}/v1/events/stream", headers=bearer("20")) as response:
            lines = response.iter_lines()
            # Blocks arrive while the stream is open: the middleware does not buffer it.
            assert next(lines) == "retry: 3000"
            assert [next(lines), next(lines)] == ["", ": keepalive"]
            during = value(samples(_text(base)), "aidlink_http_requests_total", **labels) or 0
        wait_for(lambda: stream_slots(app).active() == 0, what="the stream to end")
        wait_for(lambda: (value(samples(_text(base)), "aidlink_http_requests_total", **labels)
                          or 0) == before + 1, what="the stream to be counted")
    assert during == before


def _text(base: str) -> str:
    response = httpx2.get(f"{base}/metrics", timeout=5)
    assert response.status_code == 200
    return str(response.text)
