"""What the gateway keeps between batches: registry facts (dropped when the registry changes)
and the last_seen it wrote per device.

Every change is made on a second connection, as the API or a technician's command would, and
the next batch on the gateway's connection must see it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
import pytest

from gateway.ingest.store import LAST_SEEN_EVERY, BatchStore, Incoming
from simulators.bpm import BpReading, encode
from tests.support import Fleet, seed


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed(database_url)


def _reading(fleet: Fleet, at: datetime, systolic: int = 120) -> Incoming:
    payload = encode(BpReading(systolic=Decimal(systolic), diastolic=Decimal(80),
                               mean=Decimal(93), measured_at=at))
    return Incoming(topic=f"aidlink/v1/{fleet.hub}/{fleet.cuff}/ble/2a35", payload=payload,
                    received_at=datetime.now(UTC))


def _elsewhere(database_url: str, sql: str, *params: object) -> None:
    with psycopg.connect(database_url) as other:
        other.execute(sql, params)


def _patient_of(database_url: str, at: datetime) -> object:
    # On a connection of its own: the gateway's connection stays the gateway's.
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT patient_key FROM observations WHERE ts = %s LIMIT 1",
                           (at,)).fetchone()
    assert row is not None, f"no observation at {at}"
    return row[0]


def test_registry_facts_are_read_once_while_nothing_changes(database_url: str,
                                                            fleet: Fleet) -> None:
    start = datetime.now(UTC) - timedelta(minutes=5)
    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)
        for minute in range(3):
            result = store.write([_reading(fleet, start + timedelta(minutes=minute))])
            assert result.stored_messages == 1
        assert store._registry.loads == 1
        _elsewhere(database_url, "UPDATE devices SET firmware_version = '2.0' WHERE id = %s",
                   fleet.hub)
        store.write([_reading(fleet, start + timedelta(minutes=4))])
        assert store._registry.loads == 2


def test_an_assignment_ended_elsewhere_applies_to_the_next_batch(database_url: str,
                                                                  fleet: Fleet) -> None:
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)
        store.write([_reading(fleet, before)])
        assert _patient_of(database_url, before) is not None
        _elsewhere(database_url, "UPDATE assignments SET valid_to = %s WHERE device_id = %s",
                   before + timedelta(seconds=30), fleet.cuff)
        after = before + timedelta(seconds=45)
        store.write([_reading(fleet, after)])
        assert _patient_of(database_url, after) is None
        # The reading from before the end still belongs to the assignment of its own time.
        again = before + timedelta(seconds=10)
        store.write([_reading(fleet, again)])
        assert _patient_of(database_url, again) is not None


def test_a_device_retired_or_unpaired_elsewhere_is_refused_in_the_next_batch(
        database_url: str, fleet: Fleet) -> None:
    at = datetime.now(UTC) - timedelta(minutes=10)
    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)
        assert store.write([_reading(fleet, at)]).stored_messages == 1
        _elsewhere(database_url, "UPDATE pairings SET unpaired_at = now()"
                   " WHERE peripheral_id = %s", fleet.cuff)
        result = store.write([_reading(fleet, at + timedelta(minutes=1))])
        assert result.dead_letters == {"unpaired_peripheral": 1}
        _elsewhere(database_url, "UPDATE devices SET state = 'retired' WHERE id = %s", fleet.hub)
        result = store.write([_reading(fleet, at + timedelta(minutes=2))])
        assert result.dead_letters == {"retired_device": 1}


def test_a_new_principal_zone_applies_to_the_next_batch(database_url: str,
                                                        fleet: Fleet) -> None:
    # A cuff without a clock zone of its own reads its time in its principal's zone; the
    # test fleet's cuff has a profile, so the zone is checked through the cached row itself.
    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)
        store.write([_reading(fleet, datetime.now(UTC) - timedelta(minutes=3))])
        cached = store._registry._devices[fleet.cuff]
        _elsewhere(database_url, "UPDATE principals SET zone = 'UTC' WHERE code = '20'")
        store.write([_reading(fleet, datetime.now(UTC) - timedelta(minutes=2))])
        assert cached.principal_zone != "UTC"
        assert store._registry._devices[fleet.cuff].principal_zone == "UTC"


def test_rows_either_side_of_a_utc_month_boundary_in_local_time_get_their_partitions(
        database_url: str, fleet: Fleet) -> None:
    zone = ZoneInfo("Europe/Stockholm")
    # Both on 1 October in Stockholm (UTC+2): the first is still September in UTC.
    early = datetime(2026, 10, 1, 0, 30, tzinfo=zone)
    later = datetime(2026, 10, 1, 3, 0, tzinfo=zone)
    middle = datetime(2026, 10, 15, 12, 0, tzinfo=zone)
    with psycopg.connect(database_url) as conn:
        BatchStore(conn).write([_reading(fleet, at) for at in (later, middle, early)])
        partitions = conn.execute(
            "SELECT tableoid::regclass::text, count(*) FROM observations GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert partitions == [("observations_202609", 3), ("observations_202610", 6)]


def _last_seen(database_url: str, device: str) -> tuple[datetime, bool]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT last_seen, online FROM device_state WHERE device_id = %s",
                           (device,)).fetchone()
    assert row is not None, f"no state for {device}"
    return row[0], row[1]


def test_last_seen_is_written_every_few_seconds_of_a_burst_and_at_once_on_return(
        database_url: str, fleet: Fleet) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)

    def at(offset_s: float) -> Incoming:
        message = _reading(fleet, start + timedelta(seconds=offset_s))
        return replace(message, received_at=start + timedelta(seconds=offset_s))

    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)
        store.write([at(0)])
        assert _last_seen(database_url, fleet.cuff) == (start, True)
        store.write([at(2)])
        assert _last_seen(database_url, fleet.cuff) == (start, True)
        store.write([at(LAST_SEEN_EVERY.total_seconds())])
        assert _last_seen(database_url, fleet.cuff)[0] == start + LAST_SEEN_EVERY
        # Supervision marks the cuff offline: its next message is written at once, with the
        # device.online event, however recently this connection wrote it.
        _elsewhere(database_url, "UPDATE device_state SET online = false WHERE device_id = %s",
                   fleet.cuff)
        result = store.write([at(LAST_SEEN_EVERY.total_seconds() + 1)])
        assert _last_seen(database_url, fleet.cuff) == (
            start + LAST_SEEN_EVERY + timedelta(seconds=1), True)
        assert result.events_new == 1


def test_a_rolled_back_batch_leaves_last_seen_to_be_written_again(database_url: str,
                                                                  fleet: Fleet) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    message = replace(_reading(fleet, start), received_at=start)
    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)
        with psycopg.connect(database_url) as locker:
            # The write waits on the lock until the statement timeout ends it: no commit.
            locker.execute("LOCK TABLE observations IN ACCESS EXCLUSIVE MODE")
            conn.execute("SET statement_timeout = '300ms'")
            conn.commit()
            with pytest.raises(psycopg.errors.QueryCanceled):
                store.write([message])
            locker.rollback()
        conn.execute("SET statement_timeout = 0")
        conn.commit()
        store.write([message])
    assert _last_seen(database_url, fleet.cuff) == (start, True)
