"""Fleet gauges read from the database when Prometheus scrapes: devices online and licences
expiring, per principal.

Counters live in the process that counts; these facts live in the database, so any process
that knows the database can export them. Each process gets its own collector in a registry
of its own (``FleetMetrics.registry``), exposed next to the default one: ``aidlink up`` (API
and gateway in one process) and the many apps a test run builds never register the same
names twice in one registry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.ingest.supervision import ONLINE
from provisioning.reports import expiring_licences

log = logging.getLogger(__name__)

# What "expiring" means on the dashboard: the licence's last day is today or within 30 days,
# as `aidlink report expiring --days 30` lists them (the same query).
EXPIRING_WITHIN_DAYS = 30
DEFAULT_TTL_S = 15.0

FAILURES = Counter(
    "aidlink_fleet_metrics_failures",
    "Scrapes whose fleet gauges (devices online, licences expiring) could not be read from"
    " the database; those gauges are left out of that scrape",
)

_ONLINE_BY_PRINCIPAL = (
    "SELECT p.code, count(s.device_id) FROM principals p"
    " LEFT JOIN devices d ON d.principal_code = p.code"
    f" LEFT JOIN device_state s ON s.device_id = d.id AND {ONLINE}"
    " GROUP BY p.code ORDER BY p.code"
)


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """Per principal code: devices online now, licences expiring within the window."""

    online: dict[str, int]
    expiring: dict[str, int]


def read_snapshot(conn: psycopg.Connection[Any]) -> FleetSnapshot:
    """Both gauges in one read; every principal appears, with zero where it has none."""
    online = {str(code): int(n) for code, n in conn.execute(_ONLINE_BY_PRINCIPAL).fetchall()}
    expiring = dict.fromkeys(online, 0)
    for licence in expiring_licences(conn, within_days=EXPIRING_WITHIN_DAYS):
        expiring[licence["principal"]] = expiring.get(licence["principal"], 0) + 1
    return FleetSnapshot(online=online, expiring=expiring)


class FleetCollector(Collector):
    """Reads the fleet gauges at scrape time, at most once per ``ttl_s`` seconds."""

    def __init__(self, *, database_url: str, ttl_s: float = DEFAULT_TTL_S,
                 connect_timeout_s: int = 3,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``ttl_s`` is how long one read serves scrapes (a failed read too, so a database
        in trouble is not asked again by every scrape)."""
        if ttl_s < 0 or connect_timeout_s < 1:
            raise ValueError(f"fleet metrics: ttl_s {ttl_s} must be >= 0 and connect_timeout_s"
                             f" {connect_timeout_s} >= 1")
        self._url = database_url
        self._ttl_s = ttl_s
        self._connect_timeout_s = connect_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._snapshot: FleetSnapshot | None = None

    def describe(self) -> Iterable[Metric]:
        """The families without samples, so registering reads nothing from the database."""
        return _families(FleetSnapshot(online={}, expiring={}))

    def collect(self) -> Iterable[Metric]:
        """The gauges, or nothing when the database could not be read."""
        snapshot = self.snapshot()
        return [] if snapshot is None else _families(snapshot)

    def snapshot(self) -> FleetSnapshot | None:
        """The cached read, refreshed when older than the TTL; None after a failed read."""
        # One lock: concurrent scrapes (threaded servers) wait for one read, not start many.
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._ttl_s:
                self._snapshot = self._read()
                self._read_at = now
            return self._snapshot

    def _read(self) -> FleetSnapshot | None:
        try:
            # A statement timeout too: a scrape must answer even when the database is slow.
            with psycopg.connect(self._url, connect_timeout=self._connect_timeout_s,
                                 options="-c statement_timeout=5000") as conn:
                return read_snapshot(conn)
        except psycopg.Error as exc:
            FAILURES.inc()
            log.warning("fleet metrics not read from the database: %s",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return None


def _families(snapshot: FleetSnapshot) -> list[Metric]:
    online = GaugeMetricFamily(
        "aidlink_devices_online",
        "Devices online now (heard from within their reporting interval, not retired),"
        " by owning principal",
        labels=["principal"])
    for code, n in sorted(snapshot.online.items()):
        online.add_metric([code], n)
    expiring = GaugeMetricFamily(
        "aidlink_licences_expiring",
        f"Licences whose last day is within {EXPIRING_WITHIN_DAYS} days (today included),"
        " by paying principal",
        labels=["principal"])
    for code, n in sorted(snapshot.expiring.items()):
        expiring.add_metric([code], n)
    return [online, expiring]


class FleetMetrics:
    """The fleet collector of one process, in a registry of its own."""

    def __init__(self, *, database_url: str, ttl_s: float = DEFAULT_TTL_S) -> None:
        """Register a collector over ``database_url``; nothing is read until a scrape."""
        self.collector = FleetCollector(database_url=database_url, ttl_s=ttl_s)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self.collector)

    def exposition(self) -> bytes:
        """The process's counters and histograms followed by the fleet gauges."""
        # The gauges are read first, so a failed read is counted in this very scrape.
        fleet = generate_latest(self.registry)
        return generate_latest(REGISTRY) + fleet
