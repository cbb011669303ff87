"""Reporting supervision on a real PostgreSQL: silent devices go offline, and come back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from gateway.ingest import supervision
from gateway.ingest.store import BatchStore, Incoming
from simulators.bpm import BpReading, encode
from tests.support import Fleet, seed


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed(database_url)


def _reading(fleet: Fleet, at: datetime) -> Incoming:
    payload = encode(BpReading(systolic=Decimal(120), diastolic=Decimal(80), mean=Decimal(93),
                               measured_at=at.replace(microsecond=0)))
    return Incoming(topic=f"aidlink/v1/{fleet.hub}/{fleet.cuff}/ble/2a35", payload=payload,
                    received_at=at)


def _events(conn: psycopg.Connection[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT device_id, type, channel, device_time, patient_key IS NOT NULL FROM events"
        " ORDER BY id").fetchall()


def test_a_device_silent_past_its_interval_goes_offline_once(database_url: str,
                                                             fleet: Fleet) -> None:
    heard = datetime.now(UTC) - timedelta(minutes=5)
    with psycopg.connect(database_url) as conn:
        BatchStore(conn).write([_reading(fleet, heard)])
        # Models without a profile may stay silent a day.
        assert supervision.sweep(conn, heard + timedelta(hours=23)) == []
        later = heard + timedelta(hours=25)
        assert sorted(supervision.sweep(conn, later)) == sorted([fleet.hub, fleet.cuff])
        assert supervision.sweep(conn, later + timedelta(hours=1)) == []
        events = _events(conn)
        detail = conn.execute("SELECT data FROM events WHERE device_id = %s",
                              (fleet.cuff,)).fetchone()
    assert sorted(events) == sorted([
        (fleet.hub, "device.offline", "supervision", False, False),
        (fleet.cuff, "device.offline", "supervision", False, True),
    ])
    assert detail is not None
    assert detail[0] == {"last_seen": heard.isoformat(), "silent_for_s": 25 * 3600}


def test_a_device_heard_again_comes_back_online(database_url: str, fleet: Fleet) -> None:
    heard = datetime.now(UTC) - timedelta(days=2)
    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)
        store.write([_reading(fleet, heard)])
        supervision.sweep(conn, heard + timedelta(hours=25))
        back = datetime.now(UTC)
        result = store.write([_reading(fleet, back)])
        online = conn.execute("SELECT device_id, online FROM device_state ORDER BY 1").fetchall()
        returned = conn.execute(
            "SELECT device_id, occurred_at FROM events WHERE type = 'device.online'"
            " ORDER BY device_id").fetchall()
    assert result.events_new == 2
    assert online == sorted([(fleet.hub, True), (fleet.cuff, True)])
    assert returned == sorted([(fleet.hub, back), (fleet.cuff, back)])
