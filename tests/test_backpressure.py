"""Backpressure on real components: with the database down or slow the gateway acknowledges
nothing, keeps its in-flight work within its window, says why it is degraded, and stores
everything once when the database is back."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.health_server import HealthServer
from gateway.ingest.pipeline import SESSION_EXPIRY_SECONDS, Gateway
from gateway.mqtt import new_client, parse_mqtt_url
from gateway.services.mosquitto import MosquittoProcess
from gateway.services.postgres import PostgresProcess
from tests.support import running_gateway, wait_for
from tests.test_scale_out import (
    ROWS_PER_READING,
    Publisher,
    assert_each_reading_once,
    fleet_of_four,
    readings_stored,
)

WINDOW = 50


class HealthSampler:
    """Reads a gateway's health every few milliseconds and keeps the largest numbers."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self.max_in_flight = 0
        self.max_queued = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            health = self._gateway.health()
            self.max_in_flight = max(self.max_in_flight, health["in_flight"])
            self.max_queued = max(self.max_queued, health["queued"])


def get_health(port: int) -> tuple[int, dict[str, Any]]:
    """Status and body of /healthz."""
    try:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def held_by_broker(mqtt_url: str, client_id: str, expected: int) -> set[str]:
    """Resume ``client_id``'s session without acknowledging anything and return the ``seq``
    of every message the broker delivers: what it holds for that session."""
    target = parse_mqtt_url(mqtt_url)
    seqs: set[str] = set()
    done = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        pairs = dict(getattr(message.properties, "UserProperty", []) or [])
        seqs.add(pairs.get("seq", ""))
        if len(seqs) >= expected:
            done.set()

    probe = new_client(client_id, protocol=5)
    # Never acknowledged, so the messages stay in the session for the gateway's return.
    probe.manual_ack_set(True)
    probe.on_message = on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
    props.ReceiveMaximum = 65535
    probe.connect(target.host, target.port, clean_start=False, properties=props)
    probe.loop_start()
    try:
        done.wait(15)
    finally:
        probe.disconnect()
        probe.loop_stop()
    return seqs


def test_with_the_database_down_nothing_is_acknowledged_and_in_flight_stays_bounded(
        own_postgres: PostgresProcess, mosquitto: MosquittoProcess) -> None:
    url = own_postgres.create_database("backpressure")
    sources = fleet_of_four(url)
    total = 1000
    with running_gateway(url, mosquitto.url, receive_maximum=WINDOW,
                         batch_max_rows=20) as gateway:
        server = HealthServer(gateway.health, port=0)
        server.start()
        try:
            wait_for(lambda: gateway.health()["status"] == "ok", what="a healthy gateway")
            own_postgres.stop()
            with HealthSampler(gateway) as sampler:
                publisher = Publisher(mosquitto.url, sources)
                try:
                    publisher.publish(total)
                    publisher.wait_acknowledged()
                finally:
                    publisher.close()
                wait_for(lambda: gateway.health()["in_flight"] >= WINDOW,
                         what="the in-flight window to fill")
                status, body = get_health(server.port)
            assert status == 503, body
            assert body["status"] == "degraded"
            assert any(r.startswith("database unavailable: ") for r in body["reasons"]), body
            assert any(r.startswith("backpressure engaged: 50 messages in flight")
                       for r in body["reasons"]), body
            assert body["database"] is False
            assert body["oldest_unacknowledged_age_s"] is not None
            # The broker stops at the window the gateway asked for; the rest stays with it.
            assert sampler.max_in_flight == WINDOW
            assert sampler.max_queued <= WINDOW
        finally:
            server.stop()
    # The gateway is gone with the database still down: nothing was acknowledged, so its
    # session holds every message.
    held = held_by_broker(mosquitto.url, "aidlink-gateway", total)
    assert held == {str(n) for n in range(1, total + 1)}
    own_postgres.start()
    with running_gateway(url, mosquitto.url, receive_maximum=WINDOW) as gateway:
        wait_for(lambda: readings_stored(url) == total, timeout=60,
                 what=f"{total} readings stored after the database returned")
        wait_for(lambda: gateway.health()["status"] == "ok", what="healthy again")
    assert_each_reading_once(url, sources, total)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM observations").fetchone()
    assert row == (total * ROWS_PER_READING,)


def test_a_slow_database_is_reported_with_the_age_of_the_oldest_message(
        database_url: str, mosquitto: MosquittoProcess) -> None:
    sources = fleet_of_four(database_url)
    blocker = psycopg.connect(database_url)
    with running_gateway(database_url, mosquitto.url, slow_after=1.0) as gateway:
        wait_for(lambda: gateway.health()["status"] == "ok", what="a healthy gateway")
        # A long transaction holding the table: the gateway's insert waits behind it.
        blocker.execute("LOCK TABLE observations IN ACCESS EXCLUSIVE MODE")
        try:
            publisher = Publisher(mosquitto.url, sources)
            try:
                publisher.publish(40)
                publisher.wait_acknowledged()
            finally:
                publisher.close()
            health = wait_for(
                lambda: (h := gateway.health())["status"] == "degraded" and h, timeout=15,
                what="the gateway to report the slow database")
            slow = [r for r in health["reasons"] if r.startswith("database slow: oldest"
                                                                  " unacknowledged message")]
            assert slow, health
            assert health["database"] is True
            assert health["in_flight"] == 40
            assert health["oldest_unacknowledged_age_s"] > 1.0
            # The hubs' MQTT 5 ``seq`` user property travels with each waiting message.
            waiting = gateway.waiting()
            assert sorted(m.seq or 0 for m in waiting) == list(range(1, 41))
        finally:
            blocker.rollback()
            blocker.close()
        wait_for(lambda: readings_stored(database_url) == 40, what="40 readings stored")
        # Messages are acknowledged after their commit, so the count of messages in flight
        # falls a moment after the rows appear.
        wait_for(lambda: (h := gateway.health())["status"] == "ok" and h["in_flight"] == 0,
                 what="healthy, with nothing in flight, after the wait")
    assert_each_reading_once(database_url, sources, 40)


def test_an_idle_gateway_notices_the_database_leave_and_return(
        own_postgres: PostgresProcess, mosquitto: MosquittoProcess) -> None:
    url = own_postgres.create_database("idle")
    fleet_of_four(url)
    with running_gateway(url, mosquitto.url, supervision_interval=0.3) as gateway:
        server = HealthServer(gateway.health, port=0)
        server.start()
        try:
            wait_for(lambda: gateway.health()["status"] == "ok", what="a healthy gateway")
            assert get_health(server.port)[0] == 200
            with pytest.raises(urllib.error.HTTPError) as missing:
                urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=5)
            assert missing.value.code == 404
            assert "no route '/health'" in json.load(missing.value)["detail"]
            own_postgres.stop()
            # No message arrives: the supervisor's sweep is what finds the outage.
            wait_for(lambda: not gateway.health()["database"], what="the outage noticed")
            status, body = get_health(server.port)
            assert status == 503
            assert any(r.startswith("database unavailable: ") for r in body["reasons"]), body
            own_postgres.start()
            wait_for(lambda: gateway.health()["status"] == "ok", timeout=15,
                     what="healthy again without a message")
            assert get_health(server.port)[0] == 200
        finally:
            server.stop()
