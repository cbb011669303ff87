"""Fault suite, part two: Mosquitto SIGKILLed, the loss window, and gap detection.

A broker crash loses what it acknowledged since its last persistence snapshot (we ship
``autosave_interval 1``). QoS 1 cannot bring those back: the hub got its PUBACK and dropped
them. What the gateway can do is notice: hubs number their publishes (``seq`` user property)
and a number that never arrives becomes an ``ingest.gap`` event. These tests measure the
loss and check that every lost reading is named by such an event.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.ingest import gaps
from gateway.ingest.store import BatchStore, Incoming
from gateway.services.mosquitto import MosquittoProcess
from tests.fault_check import Report, check
from tests.fault_fleet import FleetDriver, GatewayProcess, onboard_fleet, payload
from tests.support import wait_for

pytestmark = pytest.mark.timeout(180)

SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "docker" / "mosquitto" / "mosquitto.conf"
PERSISTENCE = ("persistence true", "autosave_interval 1")


def numbered(device_id: str, seq: int | None, at: datetime) -> Incoming:
    """A reading from ``device_id`` (its own client) carrying hub counter ``seq`` (the gap
    logic reads only the counter, so every one carries the same reading)."""
    return Incoming(topic=f"aidlink/v1/{device_id}/{device_id}/ble/2a35",
                    payload=payload(1), received_at=at, seq=seq)


def transport_events(url: str) -> list[tuple[str, dict[str, Any]]]:
    """The gap events stored, oldest first."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT type, data FROM events WHERE channel = 'mqtt'"
                            " ORDER BY occurred_at, type").fetchall()
    return [(kind, data) for kind, data in rows]


def open_gaps(url: str) -> list[tuple[str, int, int]]:
    """The ranges still missing."""
    with psycopg.connect(url) as conn:
        return [(c, f, t) for c, f, t in conn.execute(
            "SELECT client_id, seq_from, seq_to FROM client_sequence_gaps ORDER BY 1, 2")]


def test_gap_raised_filled_and_not_raised_for_redelivery(database_url: str) -> None:
    first, second = onboard_fleet(database_url, 2)
    t0 = datetime.now(UTC)
    with psycopg.connect(database_url) as conn:
        store = BatchStore(conn)

        def write(*items: tuple[str, int | None]) -> None:
            nonlocal t0
            t0 += timedelta(seconds=1)
            store.write([numbered(dev, seq, t0) for dev, seq in items])

        write((first, 1), (first, 3), (first, 2))  # reordered inside a batch: no gap
        assert transport_events(database_url) == []
        write((first, 6))
        assert transport_events(database_url) == [
            (gaps.GAP, {"client": first, "from": 4, "to": 5, "missing": 2})]
        # A late 5, a redelivered 3, no number, numbers no counter has (stored, not tracked).
        write((first, 5), (first, 3), (first, None), (first, 0), (first, 2**64))
        write((first, 5))  # 5 again: already filled, nothing more
        assert transport_events(database_url)[1:] == [
            (gaps.GAP_FILLED, {"client": first, "seq": 5, "from": 4, "to": 5})]
        assert open_gaps(database_url) == [(first, 4, 4)]
        write((second, 40), ("dev-unknown", 7))  # a first number starts a client's counter
        write((second, 41), (second, 44), (first, 7))
        assert transport_events(database_url)[2:] == [
            (gaps.GAP, {"client": second, "from": 42, "to": 43, "missing": 2})]
        write((first, 4))
        assert open_gaps(database_url) == [(second, 42, 43)]
        with conn.cursor() as cur:
            counters: dict[str, int] = dict(
                cur.execute("SELECT client_id, last_seq FROM client_sequences"))
    assert counters == {first: 7, second: 44}


def test_seq_property_parsing() -> None:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = [("received-at", "2026-01-01T00:00:00Z"), ("seq", "42")]
    assert gaps.seq_of(props) == 42
    assert gaps.seq_of(None) is None
    assert [gaps.parse_seq(v) for v in ("7", " 8 ", "0", "-1", "x", "٣", str(2**63))] == [
        7, 8, None, None, None, None, None]


def test_shipped_persistence_settings_are_the_tested_ones(mosquitto: MosquittoProcess) -> None:
    shipped = SHIPPED_CONFIG.read_text().splitlines()
    tested = mosquitto.config_text().splitlines()
    for setting in PERSISTENCE:
        assert setting in shipped, f"{SHIPPED_CONFIG.name} no longer says {setting!r}"
        assert setting in tested, f"the test broker does not run with {setting!r}"


def settled(url: str, fleet: FleetDriver, timeout: float = 60.0) -> Report:
    """The store once the fleet's readings stopped arriving (some are lost for good)."""
    fleet.wait_acked(timeout)
    previous: list[int] = []

    def still() -> bool:
        report = check(url, fleet.acked())
        previous.append(report.stored)
        return len(previous) > 20 and previous[-1] == previous[-21]

    wait_for(still, timeout, "the store to stop changing")
    return check(url, fleet.acked())


@pytest.mark.parametrize("backlog", [False, True], ids=["gateway-keeping-up", "backlog"])
def test_broker_killed_loss_window_and_every_gap_raised(
        database_url: str, mosquitto: MosquittoProcess, tmp_path: Path, backlog: bool) -> None:
    devices = onboard_fleet(database_url, 20)
    gateway = GatewayProcess(database_url, mosquitto.url, tmp_path)
    gateway.start()
    fleet = FleetDriver(mosquitto.url, devices)
    fleet.start()
    try:
        fleet.publish(rounds=150, rate=400)
        wait_for(lambda: fleet.sent_total() >= 800, 30, "800 readings sent")
        if backlog:
            # The gateway is away (a deploy, a slow database): the broker holds the stream.
            gateway.stop()
            wait_for(lambda: fleet.sent_total() >= 1600, 30, "1600 readings sent")
        snapshot = (mosquitto.data_dir / "mosquitto.db").stat().st_mtime
        killed_at = time.time()
        mosquitto.kill()
        mosquitto.start()
        if backlog:
            gateway.start()
        fleet.wait_sent(60)
        report = settled(database_url, fleet)
    finally:
        fleet.close()
        gateway.stop()
    acked_at = {(d.device_id, s): t for d in fleet.devices for s, t in d.acked_at.items()}
    lost_at = [acked_at[(dev, s)] for dev, seqs in report.gaps.items() for s in seqs]
    window_ms = 0.0 if not lost_at else (killed_at - min(lost_at)) * 1000
    print(f"broker SIGKILL ({'backlog' if backlog else 'gateway keeping up'}): acked"
          f" {report.acked}, lost {report.lost} from {len(report.gaps)} devices, loss window"
          f" {window_ms:.0f} ms, snapshot {1000 * (killed_at - snapshot):.0f} ms old at the kill,"
          f" gap events {len(report.gap_events)}")
    assert not report.duplicates, report.text()
    assert report.duplicate_gap_events == 0, report.text()
    # Every loss is detected: an ingest.gap event names each lost reading.
    assert report.uncovered() == {}, (
        f"lost readings no ingest.gap event names: {report.text()} (does the gateway pass the"
        " seq user property on? pipeline _on_message must set Incoming.seq)")
    # Only what arrived after the last snapshot can go. With autosave_interval 1 Mosquitto
    # 2.0 saves when more than one whole second has passed, so every two seconds; the rest
    # is slack for a loaded machine.
    assert window_ms < 3000, report.text()
    if backlog:
        # With the stream queued at the broker, the readings since the snapshot are lost
        # (a non-empty loss shows the test exercises detection at all).
        assert report.lost > 0, report.text()
