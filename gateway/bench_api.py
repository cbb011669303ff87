"""``aidlink bench api``: FHIR reads of one patient over a large store while ingestion runs.

Steps: a throwaway PostgreSQL (durable, as in production; or an empty database given by URL),
the fleet and the stored history (``gateway.bench_api_load``), then Mosquitto, the gateway and
the API in this process as ``aidlink up`` runs them, a child process publishing blood-pressure
readings at a steady rate, and one keep-alive HTTP client asking for random patients'
observations of the last 24 hours and of the last 30 days. Latency is from sending the request
to having read the whole response body. The figures, the machine and the verdict per target
go to a JSON file.
"""

from __future__ import annotations

import http.client
import json
import math
import multiprocessing
import os
import platform
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg

from gateway import bench_api_load as load
from gateway import bench_ingest_load as ingest_load
from gateway import db
from gateway.api.limits import DEFAULT_RATE
from gateway.auth import Role, issue_token
from gateway.bench_processes import api_process, gateway_process
from gateway.mqtt import parse_mqtt_url
from gateway.services.mosquitto import MosquittoProcess
from gateway.services.postgres import PostgresProcess
from gateway.token_keys import KeyRing

TARGETS_MS = {("last_24h", "p50_ms"): 10.0, ("last_24h", "p99_ms"): 50.0,
              ("last_30d", "p99_ms"): 100.0}
# The live load counts as held when the stored rate is within 3 % of the one asked for.
INGEST_TOLERANCE = 0.97
# A server of our own gets memory fitting a machine that keeps 10 million readings, and room
# for the WAL of the initial load; both are ordinary production settings.
_PG_SETTINGS = {"shared_buffers": "1GB", "max_wal_size": "8GB", "effective_cache_size": "4GB"}


def _say(message: str) -> None:
    print(f"bench api: {message}", file=sys.stderr, flush=True)


def mint_token(url: str, secret: bytes, principal: str) -> str:
    """A clinician system's bearer token for ``principal``: the one place that knows how the
    API's tokens are made (signed by the database's current key)."""
    ring = KeyRing(lambda: psycopg.connect(url), secret)
    return issue_token(ring.current(), principal=principal, role=Role.CLINICIAN,
                       subject="bench-clinician", ttl_seconds=3600)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def _figures(latencies: list[float], resources: list[int]) -> dict[str, Any]:
    return {"requests": len(latencies),
            "p50_ms": round(statistics.median(latencies), 3),
            "p99_ms": round(_percentile(latencies, 0.99), 3),
            "max_ms": round(max(latencies), 3),
            "mean_ms": round(statistics.fmean(latencies), 3),
            "resources_per_request": round(statistics.fmean(resources), 1)}


class _Client:
    """One keep-alive HTTP/1.1 connection to the API, as a clinician's system would hold."""

    def __init__(self, port: int, token: str) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}

    def search(self, patient: str, since: datetime) -> tuple[float, int]:
        """Milliseconds for one search, and how many resources it returned."""
        query = urlencode({"subject": f"Patient/{patient}",
                           "date": "ge" + since.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "_count": 1000})
        started = time.perf_counter()
        self._conn.request("GET", f"/fhir/r4/Observation?{query}", headers=self._headers)
        response = self._conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise RuntimeError(f"GET /fhir/r4/Observation for Patient/{patient} answered "
                               f"{response.status}: {body[:300].decode(errors='replace')}")
        return elapsed, len(json.loads(body).get("entry", []))

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def _series(client: _Client, patients: list[str], window: timedelta, count: int,
            rng: random.Random) -> dict[str, Any]:
    latencies, resources = [], []
    next_at = time.monotonic()
    for _ in range(count):
        # Requests start at most at 80 % of the API's per-client rate limit, as a client that
        # respects it would send them; the wait is not part of any latency.
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at = time.monotonic() + 1 / (DEFAULT_RATE[0] * 0.8)
        elapsed, returned = client.search(rng.choice(patients), datetime.now(UTC) - window)
        latencies.append(elapsed)
        resources.append(returned)
        if len(latencies) % 100 == 0:
            _say(f"last {window.total_seconds() / 3600:g} h: {len(latencies)} of {count} requests,"
                 f" median so far {statistics.median(latencies):.1f} ms")
    return _figures(latencies, resources)


@contextmanager
def _publisher(mqtt_url: str, fleet: load.Fleet, rate: float) -> Iterator[Callable[[], int]]:
    """The live load: the hubs publishing for their cuffs at ``rate`` a second, through the
    lean publisher of ``aidlink bench ingest`` in a child process, so that neither paho's
    per-message work nor this process's GIL takes the CPU being measured. Yields the count of
    readings published so far."""
    target = parse_mqtt_url(mqtt_url)
    context = multiprocessing.get_context("spawn")
    control = ingest_load.Control(
        stop=context.Event(), rate=context.Value("d", rate, lock=False),
        paused=context.Value("b", 0, lock=False), published=context.Array("q", 1, lock=False),
        acked=context.Array("q", 1, lock=False), unrouted=context.Array("q", 1, lock=False))
    ready = context.Event()
    senders = [(hub, [f"aidlink/v1/{hub}/{cuff}/{ingest_load.CHANNEL}" for cuff in cuffs])
               for hub, cuffs in fleet.hubs]
    process = context.Process(target=ingest_load.publish, name="bench-publisher", args=(
        target.host, target.port, senders, ingest_load.payloads(997), 1.0, 0, control, ready))
    process.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the publisher process did not connect to the broker in 30 s"
                               f" (exit code {process.exitcode})")
        yield lambda: int(control.published[0])
        if not process.is_alive():
            raise RuntimeError(f"the publisher process ended early (exit code "
                               f"{process.exitcode}); the load did not run to the end")
    finally:
        control.stop.set()
        process.join(timeout=20)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)


def _server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return "unknown" if row is None else str(row[0])


def _check_empty(url: str) -> None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if row is not None and row[0]:
        raise ValueError("the database given for the bench already holds an aidlink schema;"
                         " give an empty one (the bench fills it with test data)")


def _measure(url: str, root: Path, opts: dict[str, Any]) -> dict[str, Any]:
    secret = secrets.token_bytes(32)
    db.migrate(url)
    fleet = load.seed_fleet(url, secret, patients=opts["patients"], days=opts["days"],
                            hubs=opts["hubs"], cuffs_per_hub=opts["cuffs_per_hub"], say=_say)
    started = time.perf_counter()
    inserted = load.fill_history(url, fleet, observations=opts["observations"],
                                 days=opts["days"], end=datetime.now(UTC), say=_say)
    load_s = time.perf_counter() - started
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM observations").fetchone()
    stored = 0 if row is None else int(row[0])
    _say(f"{stored:,} observations stored in {load_s:.1f} s")
    rng = random.Random(opts["seed"])
    notes: list[str] = []
    with ExitStack() as stack:
        broker = stack.enter_context(MosquittoProcess(data_dir=root / "mqtt"))
        stack.enter_context(gateway_process(url, broker.url, notes))
        port = stack.enter_context(api_process(url, secret))
        published = stack.enter_context(_publisher(broker.url, fleet, opts["ingest_rate"]))
        client = _Client(port, mint_token(url, secret, load.PRINCIPAL))
        stack.callback(client.close)
        _say(f"ingesting at {opts['ingest_rate']:,.0f} readings/s; warming up")
        time.sleep(opts["settle_s"])
        _series(client, fleet.patients, timedelta(days=30), opts["warmup"], rng)
        cuffs = fleet.ingest_cuffs
        before, clock = load.stored_readings(url, cuffs), time.monotonic()
        sent_before = published()
        _say(f"measuring {opts['requests']:,} requests per window")
        day = _series(client, fleet.patients, timedelta(hours=24), opts["requests"], rng)
        month = _series(client, fleet.patients, timedelta(days=30), opts["requests"], rng)
        after, seconds = load.stored_readings(url, cuffs), time.monotonic() - clock
        sent = published() - sent_before
    achieved = (after - before) / seconds
    return {
        "observations": {"requested": opts["observations"], "inserted": inserted,
                         "stored": stored, "load_seconds": round(load_s, 1),
                         "rows_per_s": round(inserted / max(load_s, 1e-9))},
        "fleet": {"patients": len(fleet.patients), "devices_per_patient": len(fleet.devices),
                  "live_hubs": len(fleet.hubs), "live_cuffs": len(cuffs)},
        "ingest": {"target_readings_per_s": opts["ingest_rate"],
                   "achieved_readings_per_s": round(achieved, 1),
                   "achieved_rows_per_s": round(achieved * 4, 1),
                   "published_readings_per_s": round(sent / seconds, 1),
                   "readings_during_measurement": after - before,
                   "seconds": round(seconds, 2)},
        "last_24h": day,
        "last_30d": month,
        "notes": notes,
    }


def run_api_bench(out: Path, *, observations: int = 10_000_000, patients: int = 1000,
                  days: int = 100, requests: int = 1000, ingest_rate: float = 5000.0,
                  warmup: int = 50, hubs: int = 10, cuffs_per_hub: int = 20,
                  settle_s: float = 3.0, seed: int = 1,
                  database_url: str | None = None) -> dict[str, Any]:
    """Fill a store, read from it through the FHIR API under live ingestion; the figures.

    Without ``database_url`` it runs a throwaway durable PostgreSQL of its own; a given
    database must be empty.
    """
    for name, value in (("observations", observations), ("patients", patients),
                        ("days", days), ("requests", requests), ("ingest_rate", ingest_rate),
                        ("hubs", hubs), ("cuffs_per_hub", cuffs_per_hub)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, not {value}")
    if observations < patients * 10:
        raise ValueError(f"{observations} observations for {patients} patients are fewer"
                         " than 10 each; the mix of devices needs at least 10")
    opts = {"observations": observations, "patients": patients, "days": days,
            "requests": requests, "ingest_rate": ingest_rate, "warmup": warmup, "hubs": hubs,
            "cuffs_per_hub": cuffs_per_hub, "settle_s": settle_s, "seed": seed}
    with tempfile.TemporaryDirectory(prefix="aidlink-bench-") as scratch:
        root = Path(scratch)
        root.chmod(0o755)  # the server may run as its own system user
        if database_url is not None:
            _check_empty(database_url)
            measured = _measure(database_url, root, opts)
            version, durable, settings = _server_version(database_url), None, None
        else:
            with PostgresProcess(data_dir=root / "pg", durable=True,
                                 settings=_PG_SETTINGS) as pg:
                url = pg.create_database("bench")
                measured = _measure(url, root, opts)
                version, durable, settings = _server_version(url), True, _PG_SETTINGS
    figures = {**measured, "targets": _verdicts(measured),
               "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                           "python": f"{platform.python_implementation()} "
                                     f"{platform.python_version()}",
                           "postgresql": version, "durable_postgres": durable,
                           "postgresql_settings": settings},
               "days": days, "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
    out.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def _verdicts(measured: dict[str, Any]) -> dict[str, dict[str, Any]]:
    verdicts = {}
    for (window, figure), target in TARGETS_MS.items():
        value = measured[window][figure]
        verdicts[f"{window}_{figure}"] = {"target": f"<= {target}", "measured": value,
                                          "pass": value <= target}
    ingest = measured["ingest"]
    verdicts["ingest_readings_per_s"] = {
        "target": f">= {ingest['target_readings_per_s'] * INGEST_TOLERANCE:g}",
        "measured": ingest["achieved_readings_per_s"],
        "pass": ingest["achieved_readings_per_s"]
        >= ingest["target_readings_per_s"] * INGEST_TOLERANCE}
    return verdicts


def table(figures: dict[str, Any]) -> str:
    """The figures as a few lines for a terminal."""
    lines = [f"{'window':10} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
             f" {'resources':>9}"]
    for window in ("last_24h", "last_30d"):
        f = figures[window]
        lines.append(f"{window:10} {f['requests']:>8} {f['p50_ms']:>8.2f} {f['p99_ms']:>8.2f}"
                     f" {f['max_ms']:>8.2f} {f['resources_per_request']:>9.1f}")
    ingest, stored = figures["ingest"], figures["observations"]
    lines.append(f"ingest: {ingest['achieved_readings_per_s']:,.0f} readings/s achieved of "
                 f"{ingest['target_readings_per_s']:,.0f}; store: {stored['stored']:,} rows, "
                 f"loaded in {stored['load_seconds']} s")
    lines += [f"{name:24} {v['target']:>10} {v['measured']:>10} "
              f"{'pass' if v['pass'] else 'MISS'}" for name, v in figures["targets"].items()]
    return "\n".join(lines)
