"""``aidlink bench ingest``: QoS 1 ingest from 1,000 devices into a durable PostgreSQL.

One run, one set of publisher processes (``gateway.bench_ingest_load``) connected throughout:
- ceiling: publisher -> Mosquitto -> a plain paho subscriber at QoS 1, counting messages;
- throughput: publisher -> Mosquitto -> ``aidlink gateway`` (its own process) -> PostgreSQL;
- latency: the same path at a fixed rate, publish to committed and to queryable.

A reading is one device message: one blood pressure measurement (0x2A35), which the gateway
stores as several observation rows; both rates are reported. The publishers never run more than
``MAX_BACKLOG`` readings ahead of the consumer, so a rate is one the consumer sustains, not a
flood piling up in the broker. Times come from the store: each reading's ``ts`` is its publish
moment (the ``received-at`` property) and, with ``track_commit_timestamp`` on, PostgreSQL keeps
each row's commit moment. Commit time stamps are taken just before the commit's WAL flush, so a
probe also polls a few devices' newest rows to see when readings become queryable.
"""

from __future__ import annotations

import http.client
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
import psycopg

from gateway import bench_ingest_load as load
from gateway import bench_ingest_plot as report
from gateway import db
from gateway.bench_ingest_procs import MAX_BACKLOG, Run, gateways, publishers, subscribers
from gateway.bench_processes import healthz
from gateway.services.host import read_pid
from gateway.services.mosquitto import LOG_FILE_NAME, MosquittoProcess
from gateway.services.postgres import PostgresProcess
from gateway.settings import Settings

# The gateway's count of committed messages in its Prometheus exposition.
_STORED = re.compile(r'^aidlink_ingest_messages_total\{result="stored"\} ([0-9.e+]+)$', re.M)
WARMUP_S = 3.0
PROBE_DEVICES = 10
# Durable, as in production; commit time stamps on for the latency figures; room for the WAL
# of a 30 s burst without a forced checkpoint.
PG_SETTINGS = {"track_commit_timestamp": "on", "shared_buffers": "512MB",
               "max_wal_size": "4GB"}


def _say(message: str) -> None:
    print(f"bench ingest: {message}", file=sys.stderr, flush=True)


def _pace(run: Run, stop: threading.Event) -> None:
    """Hold publishing while the consumer is ``MAX_BACKLOG`` readings behind. Five looks a
    second: each reads the gateways' /metrics, which costs them CPU; at 5,000 readings/s the
    backlog moves by 1,000 between looks, well inside the bound."""
    while not stop.wait(0.2):
        behind = run.published() - run.consumed()
        run.control.paused.value = int(run.hold or behind > run.max_backlog)


def _sample(run: Run, stop: threading.Event) -> None:
    """Once a second: published, consumed, gateway memory, CPU of each process."""
    for proc in run.watched.values():
        proc.cpu_percent()
    while not stop.wait(1.0):
        sample: dict[str, Any] = {"t": round(time.time() - run.started, 2),
                                  "phase": run.phase, "published": run.published(),
                                  "consumed": round(run.consumed())}
        if run.gateways:
            # Several gateway processes count as one gateway: their memory and CPU summed.
            try:
                sample["gateway_rss_mb"] = round(
                    sum(g.memory_info().rss for g in run.gateways) / 2**20, 1)
                sample["cpu_gateway"] = sum(g.cpu_percent() for g in run.gateways)
            except psutil.NoSuchProcess:
                run.gateways = []
        for name, proc in run.watched.items():
            sample[f"cpu_{name}"] = proc.cpu_percent()
        run.samples.append(sample)


class _Probe(threading.Thread):
    """Polls a few devices' newest rows; records when each reading became queryable."""

    def __init__(self, url: str, devices: list[str]) -> None:
        super().__init__(name="bench-probe", daemon=True)
        self._url, self._devices = url, devices
        self.stop = threading.Event()
        self.seen: list[tuple[str, float, float]] = []  # device, publish epoch, visible epoch

    def run(self) -> None:
        marks = {d: 0.0 for d in self._devices}
        with psycopg.connect(self._url, autocommit=True) as conn:
            while not self.stop.wait(0.005):
                rows = conn.execute(
                    "SELECT o.device_id, extract(epoch FROM o.ts)::float8 FROM"
                    " unnest(%s::text[], %s::float8[]) AS w(d, t) JOIN observations o"
                    " ON o.device_id = w.d AND o.code = %s AND o.ts > to_timestamp(w.t)",
                    (list(marks), list(marks.values()), load.SYSTOLIC)).fetchall()
                visible = time.time()
                for device, published in rows:
                    self.seen.append((device, published, visible))
                    marks[device] = max(marks[device], published)


def _stored_messages(health_port: int) -> Callable[[], float]:
    """Readings the gateway has committed so far, from its own counter on /metrics (exact
    and cheap; PostgreSQL's statistics of an idle backend can lag ten seconds)."""
    last = [0.0]

    def count() -> float:
        connection = http.client.HTTPConnection("127.0.0.1", health_port, timeout=2)
        try:
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
        except OSError:
            return last[0]  # between scrapes the previous figure stands
        finally:
            connection.close()
        match = _STORED.search(text)
        if match is not None:
            last[0] = float(match.group(1))
        return last[0]

    return count


def _drain(run: Run, timeout: float) -> bool:
    """Stop publishing, wait until the publishers are still, then until the consumer has
    everything published."""
    run.hold = True
    run.control.paused.value = 1
    deadline = time.monotonic() + timeout
    _quiesce(run, deadline)
    while time.monotonic() < deadline:
        if run.consumed() >= run.published() - 0.5:
            return True
        time.sleep(0.2)
    return False


def _checkpoint(url: str) -> float:
    """CHECKPOINT, and how long it took. The throughput phase leaves PostgreSQL's pages of
    its burst unwritten, the more the faster it went, and writing them out during the latency
    phase charged that phase for the burst: 10,548 readings/s stored, then a p99 of 280 ms;
    the same code with a 24 s throughput phase (10,260/s), 206 ms. So the latency phase, which
    measures a steady 5,000/s, starts from a checkpoint."""
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    return round(time.monotonic() - started, 2)


def _holding(ports: list[int]) -> str:
    """What each gateway says it holds (its /healthz): whether the readings not yet stored
    are in a gateway, or were never delivered to one."""
    said = []
    for index, port in enumerate(ports):
        answer = healthz(port)
        if answer is None:
            said.append(f"gateway {index} did not answer /healthz")
            continue
        body = answer[1]
        said.append(f"gateway {index}: {body.get('in_flight')} in flight, {body.get('queued')}"
                    f" queued, oldest {body.get('oldest_unacknowledged_age_s')} s")
    return " (" + "; ".join(said) + ")"


def _quiesce(run: Run, deadline: float) -> None:
    """Wait until every reading written is acknowledged and the count holds still. A
    publisher counts what it wrote only after writing it: the count must not move after a
    phase's consumer has gone, or readings of one phase would be taken for the next one's."""
    steady = 0
    last = -1
    while time.monotonic() < deadline and steady < 3:
        published = run.published()
        still = published == last and published == sum(run.control.acked[:])
        steady = steady + 1 if still else 0
        last = published
        time.sleep(0.1)


def _cpu_seconds(run: Run) -> dict[str, float]:
    """CPU time so far of the gateways, Mosquitto and PostgreSQL (all its processes): CPU per
    reading does not move with the machine's load as much as readings per second do."""
    groups = {"gateway": list(run.gateways)}
    if "mosquitto" in run.watched:
        groups["mosquitto"] = [run.watched["mosquitto"]]
    if run.postgres is not None:
        groups["postgresql"] = [run.postgres, *run.postgres.children(recursive=True)]
    spent = {}
    for name, procs in groups.items():
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue  # a backend that ended between the listing and the reading
            total += times.user + times.system
        spent[name] = total
    return spent


def _phase(run: Run, name: str, seconds: float, rate: float) -> None:
    """Publish for the warm-up and ``seconds``; the measured window is the latter."""
    run.phase = name
    run.control.rate.value = rate
    run.hold = False
    time.sleep(WARMUP_S)
    begin, published, consumed = time.time(), run.published(), run.consumed()
    cpu = _cpu_seconds(run)
    time.sleep(seconds)
    after = _cpu_seconds(run)
    run.phases[name] = {"begin": begin, "end": time.time(), "rate": rate,
                        "published": run.published() - published,
                        "consumed": run.consumed() - consumed,
                        "cpu_s": {k: round(after[k] - cpu.get(k, 0.0), 3) for k in after}}


def _measure(root: Path, url: str, opts: dict[str, Any],
             postgres: psutil.Process | None) -> dict[str, Any]:
    settings = Settings()
    load_at_start = [round(v, 2) for v in os.getloadavg()]
    clients = load.register_fleet(url, secrets.token_bytes(32), opts["devices"], _say)
    per_reading = load.rows_per_reading(load.payloads(997))
    notes: list[str] = []
    with ExitStack() as stack:
        broker = stack.enter_context(MosquittoProcess(data_dir=root / "mqtt"))
        run = stack.enter_context(publishers(broker, clients, opts["publishers"]))
        run.max_backlog = opts["max_backlog"]
        run.postgres = postgres
        if broker.pid is not None:
            run.watched["mosquitto"] = psutil.Process(broker.pid)
        stop = threading.Event()
        threads = [threading.Thread(target=f, args=(run, stop), daemon=True, name=f.__name__)
                   for f in (_pace, _sample)]
        for thread in threads:
            thread.start()
        stack.callback(_join, stop, threads)
        _say(f"ceiling: publishers -> Mosquitto -> subscriber, {opts['seconds_ceiling']:g} s")
        with subscribers(broker, settings.receive_maximum, opts["gateways"]) as (received,
                                                                                pids):
            for index, pid in enumerate(pids):
                run.watched[f"subscriber-{index}"] = psutil.Process(pid)
            run.consumed = received
            _phase(run, "ceiling", opts["seconds_ceiling"], 0.0)
            if not _drain(run, 60):
                notes.append("the ceiling subscribers had not caught up 60 s after the phase")
            for index in range(len(pids)):
                run.watched.pop(f"subscriber-{index}")
        run.gateways, ports = stack.enter_context(gateways(url, broker, root,
                                                            opts["gateways"]))
        counters = [_stored_messages(port) for port in ports]

        def counter() -> float:
            return sum(count() for count in counters)
        # The gateway's session begins now: readings of the ceiling phase never reach it.
        base = run.published() - counter()
        run.consumed = lambda: counter() + base
        before_gateway = run.published()
        unrouted_before = sum(run.control.unrouted[:])
        _say(f"throughput: publishers -> Mosquitto -> gateway -> PostgreSQL,"
             f" {opts['seconds_throughput']:g} s")
        _phase(run, "throughput", opts["seconds_throughput"], 0.0)
        if not _drain(run, 120):
            notes.append("the gateway had not stored the backlog 120 s after the throughput"
                         " phase; latency was measured with it still draining"
                         + _holding(ports))
        checkpoint_s = _checkpoint(url)
        probe = _Probe(url, clients[:PROBE_DEVICES])
        probe.start()
        _say(f"latency: {opts['latency_rate']:,.0f} readings/s for {opts['seconds_latency']:g} s")
        _phase(run, "latency", opts["seconds_latency"], opts["latency_rate"])
        if not _drain(run, 60):
            notes.append("the gateway had not stored every reading 60 s after the latency"
                         " phase" + _holding(ports))
        probe.stop.set()
        probe.join(timeout=10)
        per_gateway = [int(count()) for count in counters]
        run.phase = "done"
        # Sampling ends before the gateways are stopped: a gateway that is exiting has given
        # back its memory, and a sample of it would read an RSS near zero.
        _join(stop, threads)
    # Read once the publishers have ended: each waits for its last PUBACKs before it exits.
    acked = sum(run.control.acked[:])
    figures = report.analyse(url, run.phases, run.started, per_reading, probe.seen)
    figures["load_average_at_start"] = load_at_start
    figures["checkpoint_before_latency_s"] = checkpoint_s
    figures["published"] = run.published()
    figures["published_to_gateway"] = figures["published"] - before_gateway
    figures["broker_acknowledged"] = acked
    # Acknowledged by the broker with "no matching subscribers" once the gateways were up:
    # never delivered, so never storable. Zero unless a subscription was missing.
    figures["unrouted_to_gateway"] = sum(run.control.unrouted[:]) - unrouted_before
    if figures["unrouted_to_gateway"]:
        notes.append(f"{figures['unrouted_to_gateway']} readings published to the gateways"
                     " were acknowledged by the broker with no matching subscriber")
    figures["stored_by_gateway"] = per_gateway
    figures["timeline"] = report.merge_timeline(run.samples, figures.pop("per_second"))
    figures["settings"] = {"batch_max_rows": settings.batch_max_rows,
                           "batch_max_delay_ms": settings.batch_max_delay_ms,
                           "receive_maximum": settings.receive_maximum,
                           "writers": settings.writers,
                           "mqtt_protocol": settings.mqtt_protocol,
                           "publisher_window_per_connection": load.WINDOW,
                           "max_backlog_readings": opts["max_backlog"], "warmup_s": WARMUP_S,
                           "postgresql": PG_SETTINGS, "broker": _broker_settings(broker)}
    held = figures["latency"]["published_per_s"] / opts["latency_rate"]
    if held < 0.97:
        notes.append(f"the latency phase published {held:.0%} of the rate asked: the gateway"
                     " stored less, the publishers were held at the backlog bound, and the"
                     " latency includes that queue")
    figures["notes"] = notes
    figures["phases"] = run.phases
    figures["timeline_origin"] = run.started
    return figures


def _join(stop: threading.Event, threads: list[threading.Thread]) -> None:
    stop.set()
    for thread in threads:
        thread.join(timeout=10)


def _broker_settings(broker: MosquittoProcess) -> dict[str, str]:
    wanted = ("max_inflight_messages", "max_queued_messages", "persistence",
              "autosave_interval", "set_tcp_nodelay")
    pairs = (line.split(" ", 1) for line in broker.config_text().splitlines() if " " in line)
    return {key: value for key, value in pairs if key in wanted}


def keep_logs(root: Path, into: Path) -> Path:
    """Copy the gateways' and the broker's logs out of the run's scratch directory, which goes
    with the run: a run that fell short is explained by them."""
    into.mkdir(parents=True, exist_ok=True)
    for log in [*sorted(root.glob("gateway-*.log")), root / "mqtt" / LOG_FILE_NAME]:
        if log.exists():
            shutil.copy2(log, into / log.name)
    return into


def run_ingest_bench(out: Path, *, devices: int = 1000, seconds_ceiling: float = 20.0,
                     seconds_throughput: float = 30.0, latency_rate: float = 5000.0,
                     seconds_latency: float = 30.0, publishers: int = 2, gateways: int = 1,
                     max_backlog: int = MAX_BACKLOG) -> dict[str, Any]:
    """Run the three phases on a throwaway durable PostgreSQL and Mosquitto; write the
    figures to ``out`` and the plot next to it (``.png``); return the figures."""
    for name, value in (("devices", devices), ("seconds_ceiling", seconds_ceiling),
                        ("seconds_throughput", seconds_throughput),
                        ("latency_rate", latency_rate), ("seconds_latency", seconds_latency),
                        ("publishers", publishers), ("gateways", gateways),
                        ("max_backlog", max_backlog)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, not {value}")
    if devices < publishers:
        raise ValueError(f"{devices} devices cannot be shared by {publishers} publishers")
    opts = {"devices": devices, "seconds_ceiling": seconds_ceiling, "publishers": publishers,
            "seconds_throughput": seconds_throughput, "latency_rate": latency_rate,
            "seconds_latency": seconds_latency, "max_backlog": max_backlog,
            "gateways": gateways}
    with tempfile.TemporaryDirectory(prefix="aidlink-bench-") as scratch:
        root = Path(scratch)
        root.chmod(0o755)  # the server may run as its own system user
        with PostgresProcess(data_dir=root / "pg", durable=True, settings=PG_SETTINGS) as pg:
            url = pg.create_database("bench")
            db.migrate(url)
            pid = read_pid(root / "pg" / "postmaster.pid")
            figures = _measure(root, url, opts, None if pid is None else psutil.Process(pid))
            if figures["notes"] or figures["stored_readings"] != figures["published_to_gateway"]:
                kept = keep_logs(root, out.with_name(f"{out.stem}-logs"))
                figures["notes"].append(f"the gateways' and the broker's logs are kept in {kept}")
            figures["machine"] = {**report.machine(url), "load_average_at_start":
                                  figures.pop("load_average_at_start")}
            note = report.writeback_note(figures["machine"]["kernel_writeback"])
            if note is not None:
                figures["notes"].append(note)
    figures["options"] = opts
    figures["targets"] = report.verdicts(figures)
    out.write_text(report.dumps(figures))
    report.plot(figures, out.with_suffix(".png"))
    return figures
