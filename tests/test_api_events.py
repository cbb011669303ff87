"""``/v1/events`` (JSON, paged) and ``/v1/events/stream`` (server-sent events) on a real
PostgreSQL, a real Mosquitto and gateway for the ingest path, and a real HTTP server for
streams."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import psycopg
from fastapi import FastAPI
from psycopg.types.json import Jsonb

from gateway.api.app import create_app
from gateway.api.sse import Watermark, configure_streams, stream_slots
from gateway.auth import Role
from gateway.services.mosquitto import MosquittoProcess
from provisioning.patients import patient_key
from simulators.documents import Dose, dispenser_event
from simulators.hub import Hub
from tests.support import (
    SECRET,
    api_client,
    bearer,
    count,
    running_gateway,
    seed,
    served,
    wait_for,
)

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _insert(url: str, device: str, type_: str, at: datetime, *, principal: str = "20",
            patient: str | None = None, data: dict[str, Any] | None = None,
            conn: psycopg.Connection[Any] | None = None) -> int:
    """One event row written directly, as the store writes it; its id. Each gets its own
    ``ref`` so that events sharing a device, type and moment are distinct."""
    key = None if patient is None else patient_key(SECRET, principal, patient)
    sql = ("INSERT INTO events (occurred_at, device_id, principal_code, patient_key, type, data,"
           " channel, device_time, received_at, ref) VALUES (%s, %s, %s, %s, %s, %s, 'test', true,"
           " now(), gen_random_uuid()::text) RETURNING id")
    args = (at, device, principal, key, type_, Jsonb(data or {}))
    if conn is not None:
        row = conn.execute(sql, args).fetchone()
    else:
        with psycopg.connect(url) as own:
            row = own.execute(sql, args).fetchone()
    assert row is not None
    return int(row[0])


def _get(client: Any, **params: str) -> httpx2.Response:
    response: httpx2.Response = client.get("/v1/events", params=params, headers=bearer("20"))
    return response


def _all_pages(client: Any, params: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        response = _get(client, **params, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("paging did not end within 100 pages")


def test_paging_through_every_page_has_no_gaps_or_duplicates(database_url: str) -> None:
    fleet = seed(database_url)
    ids = []
    for n in range(23):
        # Three events share each moment, so the id must break ties in the keyset.
        at = T0 + timedelta(minutes=n // 3)
        ids.append(_insert(database_url, fleet.cuff, f"alarm.test{n % 2}", at,
                           patient=fleet.patient))
    with api_client(database_url) as client:
        items = _all_pages(client, {"limit": "4"})
    expected = sorted(((T0 + timedelta(minutes=n // 3), i) for n, i in enumerate(ids)),
                      reverse=True)
    assert [i["id"] for i in items] == [str(i) for _, i in expected]
    assert len({i["id"] for i in items}) == 23
    first = items[0]
    assert first["kind"] == "event"
    assert first["patient"] == patient_key(SECRET, "20", fleet.patient)
    assert first["channel"] == "test"
    assert first["device_id"] == fleet.cuff
    assert first["occurred_at"] == "2026-03-01T08:07:00Z"


def test_type_filter_takes_an_exact_type_or_a_prefix(database_url: str) -> None:
    fleet = seed(database_url)
    for n, type_ in enumerate(("alarm.button", "alarm.fall", "dispenser.dose_missed",
                               "device.offline", "alarmist.other")):
        _insert(database_url, fleet.cuff, type_, T0 + timedelta(minutes=n))
    with api_client(database_url) as client:
        alarms = client.get("/v1/events", params={"type": "alarm.*"}, headers=bearer("20"))
        offline = client.get("/v1/events", params={"type": "device.offline"},
                             headers=bearer("20"))
        bad = client.get("/v1/events", params={"type": "alarm*"}, headers=bearer("20"))
    assert [i["type"] for i in alarms.json()["items"]] == ["alarm.fall", "alarm.button"]
    assert [i["type"] for i in offline.json()["items"]] == ["device.offline"]
    assert bad.status_code == 400
    assert "type 'alarm*'" in bad.json()["detail"]


def test_patient_and_device_filters(database_url: str) -> None:
    fleet = seed(database_url)
    mine = _insert(database_url, fleet.cuff, "alarm.button", T0, patient=fleet.patient)
    loose = _insert(database_url, fleet.unpaired, "device.offline", T0 + timedelta(minutes=1))
    with api_client(database_url) as client:
        by_patient = client.get("/v1/events", params={"patient": fleet.patient},
                                headers=bearer("20")).json()
        by_device = client.get("/v1/events", params={"device": fleet.unpaired},
                               headers=bearer("20")).json()
        nobody = client.get("/v1/events", params={"patient": "someone-else-1"},
                            headers=bearer("20"))
    assert [(i["id"], i["patient"]) for i in by_patient["items"]] == [(str(mine),
                                                                       fleet.patient)]
    assert [i["id"] for i in by_device["items"]] == [str(loose)]
    assert nobody.status_code == 200
    assert nobody.json() == {"items": [], "next_cursor": None}


def test_another_principals_device_is_not_found_and_its_events_never_appear(
        database_url: str) -> None:
    fleet = seed(database_url)
    _insert(database_url, fleet.other_cuff, "alarm.fall", T0, principal="2080",
            patient=fleet.other_patient)
    own = _insert(database_url, fleet.cuff, "alarm.fall", T0)
    with api_client(database_url) as client:
        foreign = client.get("/v1/events", params={"device": fleet.other_cuff},
                             headers=bearer("20"))
        typo = client.get("/v1/events", params={"device": "no-such-device"},
                          headers=bearer("20"))
        everything = client.get("/v1/events", headers=bearer("20")).json()
        theirs = client.get("/v1/events", params={"device": fleet.other_cuff},
                            headers=bearer("2080")).json()
    assert foreign.status_code == 404
    assert foreign.json() == {"detail": f"device {fleet.other_cuff} not found"}
    assert typo.status_code == 404
    assert [i["id"] for i in everything["items"]] == [str(own)]
    assert [i["device_id"] for i in theirs["items"]] == [fleet.other_cuff]


def test_date_range_is_capped_and_needs_a_zone(database_url: str) -> None:
    fleet = seed(database_url)
    inside = _insert(database_url, fleet.cuff, "alarm.button", T0)
    _insert(database_url, fleet.cuff, "alarm.button", T0 + timedelta(days=2))
    with api_client(database_url) as client:
        too_long = _get(client, since="2024-01-01T00:00:00Z", until="2025-02-01T00:00:00Z")
        naive = _get(client, since="2026-03-01T00:00:00")
        backwards = _get(client, since="2026-03-02T00:00:00Z", until="2026-03-01T00:00:00Z")
        window = _get(client, since="2026-03-01T00:00:00+01:00", until="2026-03-02T00:00:00Z")
    assert too_long.status_code == 400
    assert "maximum of 366 days" in too_long.json()["detail"]
    assert naive.status_code == 400
    assert "since must carry a zone offset" in naive.json()["detail"]
    assert backwards.status_code == 400
    assert "until must be later than since" in backwards.json()["detail"]
    assert [i["id"] for i in window.json()["items"]] == [str(inside)]


def test_bad_cursor_after_id_and_limit_are_named(database_url: str) -> None:
    fleet = seed(database_url)
    first = _insert(database_url, fleet.cuff, "alarm.button", T0)
    later = _insert(database_url, fleet.cuff, "alarm.button", T0 - timedelta(hours=1))
    with api_client(database_url) as client:
        cursor = _get(client, cursor="bm90LWEtY3Vyc29y")
        after = _get(client, after_id="abc")
        limit = _get(client, limit="5000")
        after_first = _get(client, after_id=str(first))
    assert cursor.status_code == 400
    assert "cursor is not an events cursor" in cursor.json()["detail"]
    assert after.status_code == 400
    assert "after_id must be an event id" in after.json()["detail"]
    assert limit.status_code == 400
    assert limit.json()["detail"] == "limit must be between 1 and 500, got 5000"
    assert [i["id"] for i in after_first.json()["items"]] == [str(later)]


def test_each_patient_read_is_logged_once(database_url: str) -> None:
    fleet = seed(database_url)
    for n in range(3):
        _insert(database_url, fleet.cuff, "alarm.button", T0 + timedelta(minutes=n),
                patient=fleet.patient)
    _insert(database_url, fleet.unpaired, "alarm.button", T0, patient="second-patient-2")
    _insert(database_url, fleet.unpaired, "device.offline", T0)
    headers = {**bearer("20"), "X-Purpose": "alarm-handling", "X-End-User": "nurse-7"}
    with api_client(database_url) as client:
        response = client.get("/v1/events", headers=headers)
    assert response.status_code == 200
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT patient_key, action, purpose, end_user, principal_code"
                            " FROM access_log ORDER BY patient_key").fetchall()
    expected = sorted(patient_key(SECRET, "20", p) for p in (fleet.patient, "second-patient-2"))
    assert [r[0] for r in rows] == expected
    assert {r[1:] for r in rows} == {("events.read", "alarm-handling", "nurse-7", "20")}


def test_a_dispenser_document_through_the_gateway_is_listed(
        database_url: str, mosquitto: MosquittoProcess) -> None:
    fleet = seed(database_url)
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    dose = Dose("D-0800", at - timedelta(minutes=45), compartment=3)
    with running_gateway(database_url, mosquitto.url):
        hub = Hub(mosquitto.url, fleet.hub)
        hub.connect()
        try:
            hub.publish(fleet.cuff, "dispenser",
                        dispenser_event("dose_missed", at, dose=dose, remaining_doses=4,
                                        seq=17))
        finally:
            hub.close()
        wait_for(lambda: count(database_url, "SELECT count(*) FROM events"
                                         " WHERE channel = 'dispenser'") == 1,
                 what="the dispenser event stored")
    with api_client(database_url) as client:
        body = client.get("/v1/events", params={"type": "dispenser.*",
                                                "patient": fleet.patient},
                          headers=bearer("20")).json()
    (item,) = body["items"]
    assert item["type"] == "dispenser.dose_missed"
    assert item["channel"] == "dispenser"
    assert item["device_id"] == fleet.cuff
    assert item["patient"] == fleet.patient
    assert item["data"]["remaining_doses"] == 4
    assert item["occurred_at"] == at.isoformat().replace("+00:00", "Z")


# --- the server-sent event stream, over a real HTTP server ---------------------------------


class _Reader:
    """Blocks of an open event stream; every read has a timeout."""

    def __init__(self, response: httpx2.Response) -> None:
        self.lines = response.iter_lines()

    def block(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        for line in self.lines:
            if line == "":
                if fields:
                    return fields
                continue
            name, _, value = line.partition(":")
            fields[name or "comment"] = value.removeprefix(" ")
        raise AssertionError(f"stream ended inside a block: {fields}")

    def event(self) -> dict[str, str]:
        """The next event, skipping keepalive comments."""
        while True:
            block = self.block()
            if "id" in block:
                return block


def _stream_app(database_url: str, **settings: Any) -> FastAPI:
    app = create_app(database_url=database_url, secret=SECRET)
    configure_streams(app, poll_interval=0.05, **settings)
    return app


@contextmanager
def _stream(base: str, headers: dict[str, str], **params: str) -> Iterator[_Reader]:
    timeout = httpx2.Timeout(10.0)
    with httpx2.Client(timeout=timeout) as client, client.stream(
            "GET", f"{base}/v1/events/stream", params=params, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield _Reader(response)


def test_stream_replays_after_last_event_id_then_delivers_live_events(
        database_url: str) -> None:
    fleet = seed(database_url)
    ids = [_insert(database_url, fleet.cuff, "alarm.button", T0 + timedelta(minutes=n),
                   patient=fleet.patient) for n in range(5)]
    # Two rows a poll: the replay takes several polls, each reading on from the last.
    app = _stream_app(database_url, batch=2)
    headers = {**bearer("20"), "Last-Event-ID": str(ids[1]), "X-Purpose": "alarm-receiver"}
    with served(app) as base, _stream(base, headers) as reader:
        assert reader.block() == {"retry": "3000"}
        replayed = [reader.event() for _ in range(3)]
        assert [b["id"] for b in replayed] == [str(i) for i in ids[2:]]
        assert {b["event"] for b in replayed} == {"alarm.button"}
        item = json.loads(replayed[0]["data"])
        assert item["id"] == str(ids[2])
        assert item["patient"] == patient_key(SECRET, "20", fleet.patient)
        _insert(database_url, fleet.other_cuff, "alarm.fall", T0, principal="2080")
        live = _insert(database_url, fleet.cuff, "alarm.fall", T0 + timedelta(hours=1))
        block = reader.event()
        assert (block["id"], block["event"]) == (str(live), "alarm.fall")
        assert json.loads(block["data"])["device_id"] == fleet.cuff
    assert count(database_url, "SELECT count(*) FROM access_log WHERE action = 'events.stream'"
                 " AND purpose = 'alarm-receiver' AND patient_key = %s",
                 patient_key(SECRET, "20", fleet.patient)) >= 1


def test_stream_filters_by_type_and_patient_from_after_id(database_url: str) -> None:
    fleet = seed(database_url)
    _insert(database_url, fleet.cuff, "device.offline", T0, patient=fleet.patient)
    wanted = _insert(database_url, fleet.cuff, "alarm.fall", T0, patient=fleet.patient)
    _insert(database_url, fleet.unpaired, "alarm.fall", T0, patient="someone-else-1")
    last = _insert(database_url, fleet.cuff, "alarm.button", T0 + timedelta(minutes=1),
                   patient=fleet.patient)
    with served(_stream_app(database_url)) as base, _stream(
            base, bearer("20"), after_id="0", type="alarm.*", patient=fleet.patient) as reader:
        blocks = [reader.event(), reader.event()]
    assert [b["id"] for b in blocks] == [str(wanted), str(last)]
    assert json.loads(blocks[0]["data"])["patient"] == fleet.patient


def test_stream_without_replay_starts_at_now(database_url: str) -> None:
    fleet = seed(database_url)
    _insert(database_url, fleet.cuff, "alarm.button", T0)
    app = _stream_app(database_url)
    with served(app) as base, _stream(base, bearer("20")) as reader:
        reader.block()
        wait_for(lambda: stream_slots(app).active() == 1, what="the stream to start")
        live = _insert(database_url, fleet.cuff, "alarm.fall", T0)
        assert reader.event()["id"] == str(live)


def test_heartbeat_arrives_and_disconnect_ends_the_stream(database_url: str) -> None:
    seed(database_url)
    app = _stream_app(database_url, heartbeat=0.2)
    with served(app) as base:
        with _stream(base, bearer("20")) as reader:
            assert reader.block() == {"retry": "3000"}
            assert reader.block() == {"comment": "keepalive"}
            assert stream_slots(app).active() == 1
        wait_for(lambda: stream_slots(app).active() == 0, what="the server to end the stream")


def test_streams_per_client_are_limited_and_bad_ids_are_named(database_url: str) -> None:
    seed(database_url)
    app = _stream_app(database_url, max_per_client=1)
    with served(app) as base, _stream(base, bearer("20")) as reader:
        reader.block()
        with httpx2.Client(timeout=10.0) as client:
            second = client.get(f"{base}/v1/events/stream", headers=bearer("20"))
            bad = client.get(f"{base}/v1/events/stream",
                             headers={**bearer("2080"), "Last-Event-ID": "x1"})
    assert second.status_code == 429
    assert "maximum of 1 open event streams" in second.json()["detail"]
    assert bad.status_code == 400
    assert "Last-Event-ID must be an event id" in bad.json()["detail"]


def test_an_event_committed_after_a_higher_id_is_still_delivered(database_url: str) -> None:
    fleet = seed(database_url)
    app = _stream_app(database_url)
    with served(app) as base, _stream(base, bearer("20")) as reader:
        reader.block()
        wait_for(lambda: stream_slots(app).active() == 1, what="the stream to start")
        with psycopg.connect(database_url) as slow:
            # The slow writer takes the lower id and commits last.
            lower = _insert(database_url, fleet.cuff, "alarm.fall", T0, conn=slow)
            higher = _insert(database_url, fleet.cuff, "alarm.button", T0)
            assert reader.event()["id"] == str(higher)
            # Many polls pass, each seeing the higher id, while the slow writer is open.
            time.sleep(0.5)
            slow.commit()
        assert lower < higher
        assert reader.event()["id"] == str(lower)



def test_events_need_a_role_that_reads_them(database_url: str) -> None:
    seed(database_url)
    with api_client(database_url) as client:
        listed = client.get("/v1/events", headers=bearer("20", Role.TECHNICIAN))
        streamed = client.get("/v1/events/stream", headers=bearer("20", Role.TECHNICIAN))
    assert listed.status_code == 403
    assert streamed.status_code == 403
    assert "may not read events" in listed.json()["detail"]


def test_watermark_waits_for_older_writers_before_raising_its_floor() -> None:
    mark = Watermark(floor=10)
    # Poll 1 reads 12 while a writer that started before it (xid 500 < xmax 501) may hold 11.
    mark.advance(xmin_before=500, xmax_after=501, ids=[12], truncated=False, now=0.0,
                 settle_after=60.0)
    assert mark.fresh([11, 12]) == [11]
    # Poll 2: writer 500 still runs, so the floor stays below 11.
    mark.advance(xmin_before=500, xmax_after=502, ids=[12], truncated=False, now=1.0,
                 settle_after=60.0)
    assert mark.floor == 10
    # Poll 3: every writer below 501 has ended; 11 was committed and is read now.
    assert mark.fresh([11, 12]) == [11]
    mark.advance(xmin_before=501, xmax_after=503, ids=[11, 12], truncated=False, now=2.0,
                 settle_after=60.0)
    assert mark.floor == 12
    assert mark.delivered == set()


def test_watermark_never_rises_past_an_unread_row_or_waits_forever() -> None:
    mark = Watermark(floor=0)
    mark.advance(xmin_before=1, xmax_after=2, ids=[5, 9], truncated=False, now=0.0,
                 settle_after=60.0)
    # A truncated poll read only up to 3; the floor may not pass ids it has not read.
    mark.advance(xmin_before=2, xmax_after=3, ids=[1, 2, 3], truncated=True, now=1.0,
                 settle_after=60.0)
    assert mark.floor == 3
    assert mark.fresh([4, 5, 9]) == [4]
    # A writer holding xmin back for longer than settle_after is no longer waited for.
    mark.advance(xmin_before=2, xmax_after=4, ids=[4, 5, 9], truncated=False, now=2.0,
                 settle_after=60.0)
    assert mark.floor == 3
    mark.advance(xmin_before=2, xmax_after=5, ids=[], truncated=False, now=62.5,
                 settle_after=60.0)
    assert mark.floor == 9
