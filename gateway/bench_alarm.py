"""``aidlink bench alarm``: from a SCAIP alarm's publish to its ``<mrs>`` reply, on real parts.

It starts its own PostgreSQL (durable: fsync on, as in production) and Mosquitto on free
ports, runs the gateway, onboards one social alarm, and publishes alarms one at a time. The
gateway replies only after the alarm is committed, so the time to the reply covers both
"stored" and "answered". Results (p50, p95, p99, max in ms) go to a JSON file.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg

from adapters import scaip
from gateway import db
from gateway.ingest.pipeline import Gateway, GatewayConfig
from gateway.mqtt import new_client
from gateway.services.mosquitto import MosquittoProcess
from gateway.services.postgres import PostgresProcess
from provisioning import service
from simulators import scaip as scaip_sim


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


class _AlarmUnit:
    """An alarm unit that publishes <mrq> and waits for the matching <mrs>."""

    def __init__(self, url: str, client_id: str) -> None:
        target = url.removeprefix("mqtt://").split(":")
        self._client = new_client(client_id, protocol=5)
        self._replies: dict[str, float] = {}
        self._arrived = threading.Condition()
        self._client.on_message = self._on_message
        self._client.connect(target[0], int(target[1]))
        self._client.subscribe(f"aidlink/v1/{client_id}/down/scaip", qos=1)
        self._client.loop_start()
        self.client_id = client_id

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        reply = scaip.read_reply(bytes(msg.payload))
        with self._arrived:
            self._replies[reply.ref] = time.perf_counter()
            self._arrived.notify_all()

    def alarm(self, ref: str, timeout: float = 10.0) -> float:
        """Publish one alarm; seconds until its reply."""
        payload = scaip_sim.alarm(ref, "8031372", 3)
        started = time.perf_counter()
        self._client.publish(f"aidlink/v1/{self.client_id}/{self.client_id}/scaip", payload,
                             qos=1)
        with self._arrived:
            if not self._arrived.wait_for(lambda: ref in self._replies, timeout):
                raise TimeoutError(f"no reply to alarm {ref} within {timeout} s")
            return self._replies[ref] - started

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()


def run_alarm_bench(out: Path, count: int = 200) -> dict[str, Any]:
    """Measure ``count`` alarms one after another; write and return the figures."""
    with tempfile.TemporaryDirectory(prefix="aidlink-bench-") as scratch:
        root = Path(scratch)
        root.chmod(0o755)
        pg = PostgresProcess(data_dir=root / "pg", durable=True)
        broker = MosquittoProcess(data_dir=root / "mqtt")
        pg.start()
        broker.start()
        gateway: Gateway | None = None
        unit: _AlarmUnit | None = None
        try:
            url = pg.create_database("bench")
            db.migrate(url)
            with psycopg.connect(url) as conn:
                service.add_principal(conn, "20", "Region Dalarna")
                device = service.onboard_device(conn, principal="20", model="sim-social-alarm",
                                                serial="bench-1", actor="bench")
            gateway = Gateway(GatewayConfig(database_url=url, mqtt_url=broker.url))
            gateway.start()
            if not gateway.wait_connected(10):
                raise RuntimeError("the gateway did not connect to the bench broker")
            unit = _AlarmUnit(broker.url, device["client_id"])
            unit.alarm("warmup000001")
            latencies = [unit.alarm(f"{n:012d}") * 1000 for n in range(count)]
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT count(*) FROM events WHERE type = 'alarm.button'"
                                   ).fetchone()
            stored = 0 if row is None else int(row[0])
        finally:
            if unit is not None:
                unit.close()
            if gateway is not None:
                gateway.stop()
            broker.stop()
            pg.stop()
    figures = {
        "alarms": count,
        "stored": stored,
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(_percentile(latencies, 0.95), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
        "target_ms": 100,
        "durable_postgres": True,
    }
    out.write_text(json.dumps(figures, indent=2) + "\n")
    return figures
