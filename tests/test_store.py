"""The store on a real PostgreSQL: partitions, the natural key, dead letters, refused rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
import pytest

from gateway import db
from gateway.ingest.store import BatchStore, Incoming
from simulators.bpm import BpReading, encode
from tests.support import Fleet, count, seed

ZONE = ZoneInfo("Europe/Stockholm")


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed(database_url)


def _message(fleet: Fleet, at: datetime | None, *, hub_time: datetime | None = None,
             systolic: int = 120) -> Incoming:
    payload = encode(BpReading(systolic=Decimal(systolic), diastolic=Decimal(80),
                               mean=Decimal(93), measured_at=at))
    return Incoming(topic=f"aidlink/v1/{fleet.hub}/{fleet.cuff}/ble/2a35", payload=payload,
                    received_at=datetime.now(UTC), hub_received_at=hub_time)


def test_migrations_are_recorded_once(database_url: str) -> None:
    assert db.migrate(database_url) == db.migration_names()
    assert db.migrate(database_url) == []
    assert count(database_url, "SELECT count(*) FROM schema_migrations") == len(
        db.migration_names())


def test_readings_land_in_monthly_partitions(database_url: str, fleet: Fleet) -> None:
    times = [datetime(2026, 9, 30, 21, 59, tzinfo=UTC), datetime(2026, 10, 1, 0, 0, tzinfo=UTC),
             datetime(2026, 11, 15, 12, 0, tzinfo=UTC)]
    with psycopg.connect(database_url) as conn:
        result = BatchStore(conn).write([_message(fleet, t) for t in times])
        partitions = conn.execute(
            "SELECT tableoid::regclass::text, count(*) FROM observations GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert result.observations_new == 9
    assert partitions == [("observations_202609", 3), ("observations_202610", 3),
                          ("observations_202611", 3)]


def test_a_redelivered_message_is_stored_once_and_counted_as_not_new(
        database_url: str, fleet: Fleet) -> None:
    message = _message(fleet, datetime(2026, 11, 2, 7, 30, tzinfo=UTC))
    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)
        first = store.write([message, message])
        second = store.write([message])
    assert (first.stored_messages, first.observations_new) == (2, 3)
    assert (second.stored_messages, second.observations_new) == (1, 0)
    assert count(database_url, "SELECT count(*) FROM observations") == 3


def test_a_batch_mixing_stored_and_new_readings_stores_the_new_ones_once(
        database_url: str, fleet: Fleet) -> None:
    stored = _message(fleet, datetime(2026, 11, 2, 7, 30, tzinfo=UTC))
    new = _message(fleet, datetime(2026, 11, 2, 7, 31, tzinfo=UTC), systolic=131)
    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)
        assert store.copies_directly  # a superuser: row security does not apply
        store.write([stored])
        mixed = store.write([new, stored])
        again = store.write([_message(fleet, datetime(2026, 11, 2, 7, 32, tzinfo=UTC))])
    assert (mixed.stored_messages, mixed.observations_new) == (2, 3)
    assert again.observations_new == 3
    assert count(database_url, "SELECT count(*) FROM observations") == 9
    assert count(database_url, "SELECT count(*) FROM observations WHERE value = 131") == 1


def test_without_a_device_time_the_hubs_receipt_time_is_the_time(database_url: str,
                                                                 fleet: Fleet) -> None:
    hub_time = datetime(2026, 11, 3, 8, 0, 1, tzinfo=UTC)
    with psycopg.connect(database_url) as conn:
        BatchStore(conn).write([_message(fleet, None, hub_time=hub_time)])
        rows = conn.execute("SELECT DISTINCT ts, measured_at FROM observations").fetchall()
    assert rows == [(hub_time, None)]


def test_repeated_garbage_is_one_dead_letter_counted_up(database_url: str,
                                                       fleet: Fleet) -> None:
    garbage = Incoming(topic=f"aidlink/v1/{fleet.hub}/{fleet.cuff}/ble/2a35", payload=b"\x01",
                       received_at=datetime.now(UTC))
    later = Incoming(topic=garbage.topic, payload=garbage.payload,
                     received_at=garbage.received_at + timedelta(seconds=5))
    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)
        store.write([garbage])
        store.write([later])
        rows = conn.execute(
            "SELECT reason, times, last_seen - first_seen FROM dead_letters").fetchall()
    assert rows == [("decode_error", 2, timedelta(seconds=5))]


def test_a_message_the_database_refuses_is_set_aside_and_the_rest_stored(
        database_url: str, fleet: Fleet) -> None:
    # A NUL in a topic (MQTT forbids it; a broken client may still send one) is text
    # PostgreSQL refuses: the batch is retried one by one and only that message is set aside.
    good = _message(fleet, datetime(2026, 11, 4, 9, 0, tzinfo=UTC))
    bad = Incoming(topic=f"aidlink/v1/{fleet.hub}\x00/{fleet.cuff}/ble/2a35",
                   payload=good.payload, received_at=good.received_at)
    with psycopg.connect(database_url) as conn:
        result = BatchStore(conn).write_isolating([bad, good])
        dead = conn.execute("SELECT reason, topic FROM dead_letters").fetchall()
    assert (result.stored_messages, result.dead_letters) == (1, {"store_error": 1})
    assert dead == [("store_error", f"aidlink/v1/{fleet.hub}\\x00/{fleet.cuff}/ble/2a35")]
    assert count(database_url, "SELECT count(*) FROM observations") == 3


def test_readings_before_an_assignment_belong_to_no_patient(database_url: str,
                                                            fleet: Fleet) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=90)
    with psycopg.connect(database_url) as conn:
        BatchStore(conn).write([_message(fleet, long_ago.replace(microsecond=0))])
    assert count(database_url,
                 "SELECT count(*) FROM observations WHERE patient_key IS NULL") == 3


def test_a_fault_of_ours_costs_one_message_not_the_batch(
        database_url: str, fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters import registry
    from adapters.model import DecodeContext, Record

    def broken(payload: bytes, ctx: DecodeContext) -> list[Record]:
        raise RuntimeError("a bug in an adapter")

    # An adapter is a seam of ours: one that breaks its contract must not stop ingestion.
    monkeypatch.setitem(registry.ADAPTERS, "ble/2a35", broken)
    tripping = _message(fleet, datetime(2026, 11, 5, 9, 0, tzinfo=UTC))
    battery = Incoming(topic=f"aidlink/v1/{fleet.hub}/{fleet.cuff}/ble/2a19", payload=b"\x50",
                       received_at=datetime.now(UTC))
    with psycopg.connect(database_url) as conn:
        result = BatchStore(conn).write_isolating([tripping, battery])
        dead = conn.execute("SELECT reason, detail FROM dead_letters").fetchall()
        events = conn.execute("SELECT type, data FROM events").fetchall()
    assert (result.stored_messages, result.dead_letters) == (1, {"internal_error": 1})
    assert dead == [("internal_error", "RuntimeError('a bug in an adapter')")]
    assert events == [("device.battery", {"level": 80})]


def _dose_missed(fleet: Fleet, seq: int, at: datetime) -> Incoming:
    document = {"v": 1, "type": "dose_missed", "at": at.isoformat(), "seq": seq,
                "dose": {"id": f"D-{seq}", "scheduled_at": at.isoformat(), "compartment": 1}}
    return Incoming(topic=f"aidlink/v1/{fleet.hub}/{fleet.hub}/dispenser",
                    payload=json.dumps(document).encode(), received_at=datetime.now(UTC))


def test_an_event_resent_with_a_later_time_is_stored_once(database_url: str,
                                                          fleet: Fleet) -> None:
    # A device that missed the acknowledgement sends again; a DC-09 unit even restamps the
    # frame. The same sequence number from the same device within minutes is one event.
    at = datetime(2026, 11, 2, 8, 45, tzinfo=UTC)
    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)
        first = store.write([_dose_missed(fleet, 41, at)])
        resent = store.write([_dose_missed(fleet, 41, at + timedelta(seconds=40))])
        # The sequence number comes round again much later: a new event.
        later = store.write([_dose_missed(fleet, 41, at + timedelta(hours=2))])
        other = store.write([_dose_missed(fleet, 42, at + timedelta(seconds=40))])
    assert [r.events_new for r in (first, resent, later, other)] == [1, 0, 1, 1]
    assert count(database_url, "SELECT count(*) FROM events WHERE type = 'dispenser.dose_missed'"
                 ) == 3


def test_a_month_first_seen_in_a_refused_batch_still_gets_its_partition(
        database_url: str, fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    # The refused batch made the month's partition and rolled it back with everything else:
    # the messages retried one by one must make it again, not find it missing.
    faults = iter([psycopg.errors.DataError("refused once, after the observations")])
    sequences = BatchStore._sequences

    def refuse_once(store: BatchStore, plan: object) -> None:
        fault = next(faults, None)
        if fault is not None:
            raise fault
        sequences(store, plan)  # type: ignore[arg-type]

    monkeypatch.setattr(BatchStore, "_sequences", refuse_once)
    message = _message(fleet, datetime(2026, 3, 4, 9, 0, tzinfo=UTC))
    with psycopg.connect(database_url) as conn:
        result = BatchStore(conn).write_isolating([message])
    assert (result.stored_messages, result.dead_letters) == (1, {})
    assert count(database_url, "SELECT count(*) FROM observations_202603") == 3
