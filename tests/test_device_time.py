"""Device time and stored records at the store: zones, clock offsets, replay requests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
import pytest

from gateway.ingest.store import BatchStore, Incoming, Outbound
from provisioning import service
from simulators import gatt as sim
from simulators.bpm import BpReading, encode
from tests.support import Fleet, seed

STOCKHOLM = ZoneInfo("Europe/Stockholm")


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed(database_url)


def _cuff_on_profile(url: str, fleet: Fleet, model: str) -> str:
    """A cuff of a profiled model, paired with the fleet's hub and assigned."""
    with psycopg.connect(url) as conn:
        cuff = service.onboard_device(conn, principal="20", model=model, serial=f"{model}-1",
                                      actor="t")
        service.pair(conn, peripheral_id=cuff["device_id"], hub_id=fleet.hub, actor="t")
    return str(cuff["device_id"])


def _message(fleet: Fleet, device: str, channel: str, payload: bytes, at: datetime,
             hub_time: datetime | None = None) -> Incoming:
    return Incoming(topic=f"aidlink/v1/{fleet.hub}/{device}/{channel}", payload=payload,
                    received_at=at, hub_received_at=hub_time)


def test_a_skewed_clock_is_measured_and_later_readings_are_corrected(
        database_url: str, fleet: Fleet) -> None:
    cuff = _cuff_on_profile(database_url, fleet, "sim-bpm")
    now = datetime.now(UTC).replace(microsecond=0)
    skew = timedelta(minutes=7)
    clock = sim.encode_device_clock(sim.DeviceClock(
        (now + skew).astimezone(STOCKHOLM).replace(tzinfo=None)))
    reading = encode(BpReading(systolic=Decimal(130), diastolic=Decimal(85), mean=Decimal(100),
                               measured_at=now - timedelta(minutes=1) + skew))
    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)
        store.write([_message(fleet, cuff, "ble/2a08", clock, now, hub_time=now)])
        store.write([_message(fleet, cuff, "ble/2a35", reading, now, hub_time=now)])
        offset = conn.execute("SELECT clock_offset_s FROM device_state WHERE device_id = %s",
                              (cuff,)).fetchone()
        rows = conn.execute("SELECT DISTINCT measured_at, flags, clock_offset_s FROM observations"
                            " WHERE device_id = %s", (cuff,)).fetchall()
        event = conn.execute("SELECT data FROM events WHERE type = 'device.clock'").fetchone()
    assert offset == (420.0,)
    assert rows == [(now - timedelta(minutes=1), ["clock_corrected"], 420.0)]
    assert event is not None
    assert event[0]["offset_s"] == 420.0


def test_a_small_clock_error_is_left_alone(database_url: str, fleet: Fleet) -> None:
    cuff = _cuff_on_profile(database_url, fleet, "sim-bpm")
    now = datetime.now(UTC).replace(microsecond=0)
    clock = sim.encode_device_clock(sim.DeviceClock(
        (now + timedelta(seconds=20)).astimezone(STOCKHOLM).replace(tzinfo=None)))
    reading = encode(BpReading(systolic=Decimal(130), diastolic=Decimal(85), mean=Decimal(100),
                               measured_at=now))
    with psycopg.connect(database_url) as conn:
        BatchStore(conn).write([_message(fleet, cuff, "ble/2a08", clock, now, hub_time=now),
                                _message(fleet, cuff, "ble/2a35", reading, now, hub_time=now)])
        rows = conn.execute("SELECT DISTINCT measured_at, flags, clock_offset_s FROM observations"
                            " WHERE device_id = %s", (cuff,)).fetchall()
    assert rows == [(now, [], None)]


def test_a_local_clock_profile_reads_device_time_in_its_zone(database_url: str,
                                                            fleet: Fleet) -> None:
    # sim-bpm keeps Europe/Stockholm wall-clock time: 14:00 local in July is 12:00 UTC.
    cuff = _cuff_on_profile(database_url, fleet, "sim-bpm")
    at = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    reading = encode(BpReading(systolic=Decimal(130), diastolic=Decimal(85), mean=Decimal(100),
                               measured_at=at), zone=STOCKHOLM)
    with psycopg.connect(database_url) as conn:
        BatchStore(conn).write([_message(fleet, cuff, "ble/2a35", reading, at)])
        stored = conn.execute("SELECT DISTINCT measured_at FROM observations").fetchall()
    assert stored == [(at,)]


def test_a_channel_outside_the_profile_is_refused(database_url: str, fleet: Fleet) -> None:
    cuff = _cuff_on_profile(database_url, fleet, "sim-bpm")
    weight = sim.encode_weight(sim.WeightReading(Decimal("80.000")))
    with psycopg.connect(database_url) as conn:
        result = BatchStore(conn).write([_message(fleet, cuff, "ble/2a9d", weight,
                                                  datetime.now(UTC))])
    assert result.dead_letters == {"channel_not_in_profile": 1}


def _glucose(fleet: Fleet, meter: str, sequence: int, at: datetime) -> Incoming:
    payload = sim.encode_glucose(sim.GlucoseReading(sequence, at, Decimal("6.2"), mmol=True),
                                 STOCKHOLM)
    return _message(fleet, meter, "ble/2a18", payload, datetime.now(UTC))


def test_a_gap_in_stored_records_asks_the_hub_for_them_once(database_url: str,
                                                            fleet: Fleet) -> None:
    meter = _cuff_on_profile(database_url, fleet, "sim-glucose")
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=10)

    def at(n: int) -> datetime:
        return base + timedelta(hours=n)

    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)
        first = store.write([_glucose(fleet, meter, n, at(n)) for n in (1, 2, 3)])
        gap = store.write([_glucose(fleet, meter, n, at(n)) for n in (6, 7)])
        again = store.write([_glucose(fleet, meter, 8, at(8))])
        replayed = store.write([_glucose(fleet, meter, n, at(n)) for n in (4, 5, 2)])
        state = conn.execute("SELECT last_sequence, requested_after FROM record_sequences"
                             " WHERE device_id = %s", (meter,)).fetchone()
        stored = conn.execute("SELECT sequence FROM observations WHERE device_id = %s"
                              " ORDER BY sequence", (meter,)).fetchall()
    assert first.outbound == []
    assert gap.outbound == [Outbound(
        f"aidlink/v1/{fleet.hub}/down/fetch-records",
        json.dumps({"device": meter, "channel": "ble/2a18", "after": 3},
                   separators=(",", ":")).encode())]
    assert again.outbound == []
    assert replayed.outbound == []
    assert (replayed.stored_messages, replayed.observations_new) == (3, 2)
    assert state == (8, 3)
    assert [s for (s,) in stored] == [1, 2, 3, 4, 5, 6, 7, 8]
