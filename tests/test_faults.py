"""Fault suite, part one: nothing lost, nothing duplicated, whatever fails mid-stream.

Each scenario runs ``aidlink gateway`` as its own process against a real Mosquitto (the
settings we ship: persistence, autosave every second, unlimited queues) and a real PostgreSQL,
feeds it a sequence-numbered fleet and checks the store against what the broker PUBACKed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.services.mosquitto import MosquittoProcess
from gateway.services.postgres import PostgresProcess
from tests.fault_check import Report, check, stored_count
from tests.fault_fleet import FleetDriver, GatewayProcess, onboard_fleet
from tests.support import wait_for

pytestmark = pytest.mark.timeout(240)


def drained(url: str, fleet: FleetDriver, timeout: float = 60.0) -> Report:
    """Once the broker acknowledged everything sent, wait until all of it is stored."""
    fleet.wait_acked(timeout)
    total = sum(len(s) for s in fleet.acked().values())
    wait_for(lambda: stored_count(url) >= total, timeout, f"{total} readings stored")
    return check(url, fleet.acked())


def assert_nothing_lost(report: Report, expected: int, fleet: FleetDriver) -> None:
    """Every reading acknowledged and stored exactly once; no gap raised."""
    assert not any(d.refused for d in fleet.devices), fleet.summary()
    assert report.acked == expected, report.text()
    assert report.lost == 0, report.text()
    assert not report.duplicates, report.text()
    assert report.stored == expected, report.text()
    assert report.dead_letters == 0, report.text()
    assert not report.gap_events, report.text()


@pytest.fixture
def gateway(database_url: str, mosquitto: MosquittoProcess,
            tmp_path: Path) -> Iterator[GatewayProcess]:
    """The gateway process on the test database and broker (started by the test)."""
    process = GatewayProcess(database_url, mosquitto.url, tmp_path)
    try:
        yield process
    finally:
        process.stop()


def test_broker_restarted_gracefully_mid_stream(database_url: str, mosquitto: MosquittoProcess,
                                                gateway: GatewayProcess) -> None:
    devices = onboard_fleet(database_url, 20)
    gateway.start()
    fleet = FleetDriver(mosquitto.url, devices)
    fleet.start()
    try:
        fleet.publish(rounds=100, rate=400)
        wait_for(lambda: fleet.sent_total() >= 800, 30, "800 readings sent")
        mosquitto.restart()
        fleet.wait_sent(30)
        report = drained(database_url, fleet)
    finally:
        fleet.close()
    assert_nothing_lost(report, 2000, fleet)
    assert all(d.connects >= 2 for d in fleet.devices), "the restart did not reach every client"


def test_gateway_killed_mid_batch_and_restarted(database_url: str, mosquitto: MosquittoProcess,
                                               gateway: GatewayProcess) -> None:
    devices = onboard_fleet(database_url, 20)
    gateway.start()
    fleet = FleetDriver(mosquitto.url, devices)
    fleet.start()
    try:
        fleet.publish(rounds=150, rate=600)
        wait_for(lambda: stored_count(database_url) >= 600, 30, "600 readings stored")
        gateway.kill()
        in_stream = fleet.sent_total()
        time.sleep(1.0)
        gateway.start()
        fleet.wait_sent(30)
        report = drained(database_url, fleet)
    finally:
        fleet.close()
    assert in_stream < 3000, "the gateway was killed after the stream had ended"
    # Messages of the batch in hand at the kill were stored or not; either way the broker
    # redelivers them to the new process, and the natural key keeps one copy.
    assert_nothing_lost(report, 3000, fleet)


def test_database_stopped_for_30_seconds(own_postgres: PostgresProcess,
                                         mosquitto: MosquittoProcess,
                                         tmp_path: Path) -> None:
    url = own_postgres.create_database("faults")
    devices = onboard_fleet(url, 10)
    gateway = GatewayProcess(url, mosquitto.url, tmp_path)
    gateway.start()
    fleet = FleetDriver(mosquitto.url, devices)
    fleet.start()
    try:
        fleet.publish(rounds=120, rate=30)
        wait_for(lambda: stored_count(url) >= 50, 30, "50 readings stored")
        own_postgres.stop()
        time.sleep(30)
        during = fleet.sent_total()
        own_postgres.start()
        fleet.wait_sent(60)
        report = drained(url, fleet)
    finally:
        fleet.close()
        gateway.stop()
    assert during >= 900, f"only {during} readings sent by the end of the outage"
    assert "database write failed" in gateway.log_tail(400), "the outage never reached a batch"
    assert_nothing_lost(report, 1200, fleet)


def test_thousand_devices_reconnect_at_once(database_url: str, mosquitto: MosquittoProcess,
                                            gateway: GatewayProcess) -> None:
    devices = onboard_fleet(database_url, 1000)
    gateway.start()
    fleet = FleetDriver(mosquitto.url, devices)
    fleet.start()
    try:
        fleet.publish(rounds=3, rate=1500)
        wait_for(lambda: fleet.sent_total() >= 1500, 30, "1500 readings sent")
        fleet.drop_all()
        fleet.wait(lambda: all(d.connects >= 2 and d.connected for d in fleet.devices), 60,
                   "every client back")
        fleet.wait_sent(30)
        report = drained(database_url, fleet, timeout=90)
    finally:
        fleet.close()
    assert_nothing_lost(report, 3000, fleet)


def test_ten_minute_backlog_drains_with_flat_memory(
        database_url: str, mosquitto: MosquittoProcess, gateway: GatewayProcess) -> None:
    # 1,000 devices at one reading a minute for 10 minutes: 10,000 readings queued at the
    # broker for the gateway's persistent session while it is down.
    devices = onboard_fleet(database_url, 1000)
    gateway.start()
    gateway.stop()
    fleet = FleetDriver(mosquitto.url, devices)
    fleet.start()
    try:
        fleet.publish(rounds=10, rate=5000)
        fleet.wait_acked(60)
        assert stored_count(database_url) == 0
        gateway.start(wait=False)
        samples: list[tuple[int, int]] = []
        deadline = time.monotonic() + 90
        while (stored := stored_count(database_url)) < 10_000 and time.monotonic() < deadline:
            samples.append((stored, gateway.rss()))
            time.sleep(0.05)
        report = drained(database_url, fleet)
    finally:
        fleet.close()
    assert_nothing_lost(report, 10_000, fleet)
    draining = [rss for stored, rss in samples if stored > 0]
    assert len(draining) >= 5, f"too few memory samples during the drain: {samples}"
    half = len(draining) // 2
    peak_mb = max(draining) / 2**20
    growth_mb = (max(draining[half:]) - max(draining[:half])) / 2**20
    print(f"backlog drain: {len(draining)} samples, peak RSS {peak_mb:.1f} MB,"
          f" second-half growth {growth_mb:.1f} MB")
    # The gateway holds at most receive_maximum (1000) unacknowledged messages, queued twice
    # over at worst: a few MB of payloads. The rest is the interpreter and its libraries.
    assert peak_mb < 200, f"peak RSS {peak_mb:.1f} MB during the drain"
    assert growth_mb < 16, f"RSS still grew {growth_mb:.1f} MB in the second half of the drain"
