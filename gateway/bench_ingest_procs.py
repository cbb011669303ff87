"""The processes of ``aidlink bench ingest``: publishers, the ceiling's plain subscribers and
the gateways, each started, waited for until ready and stopped with the block that uses them.

``Run`` is the state the bench shares between them and its own threads: control of the
publishers (``gateway.bench_ingest_load``), the processes watched and what was sampled.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from gateway import bench_ingest_load as load
from gateway.bench_processes import healthz
from gateway.services.host import find_free_port
from gateway.services.mosquitto import MosquittoProcess

# A backlog bound well above the gateway's in-flight window (1,000) and the second of delay
# in PostgreSQL's statistics that measure the gateway's progress.
MAX_BACKLOG = 20_000


@dataclass(slots=True)
class Run:
    """The run's shared state: control of the publishers and what was sampled."""

    control: load.Control
    started: float
    phase: str = "setup"
    # Publish nothing (between phases), whatever the backlog.
    hold: bool = True
    max_backlog: int = MAX_BACKLOG
    consumed: Callable[[], float] = lambda: 0.0
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    gateways: list[psutil.Process] = field(default_factory=list)
    watched: dict[str, psutil.Process] = field(default_factory=dict)
    postgres: psutil.Process | None = None

    def published(self) -> int:
        return int(sum(self.control.published[:]))


@contextmanager
def publishers(broker: MosquittoProcess, clients: list[str], count: int) -> Iterator[Run]:
    """The publisher processes, each with its share of the devices, connected and paused."""
    context = multiprocessing.get_context("spawn")
    control = load.Control(stop=context.Event(), rate=context.Value("d", 0.0, lock=False),
                           paused=context.Value("b", 1, lock=False),
                           published=context.Array("q", count, lock=False),
                           acked=context.Array("q", count, lock=False),
                           unrouted=context.Array("q", count, lock=False))
    pool = load.payloads(997)
    readies, procs = [], []
    for index in range(count):
        ready = context.Event()
        proc = context.Process(target=load.publish, name=f"bench-publisher-{index}", args=(
            broker.host, broker.port,
            [(c, [load.device_topic(c)]) for c in clients[index::count]], pool, 1 / count,
            index, control, ready))
        proc.start()
        readies.append(ready)
        procs.append(proc)
    run = Run(control=control, started=time.time())
    try:
        for ready, proc in zip(readies, procs, strict=True):
            if not ready.wait(60):
                raise RuntimeError(f"publisher {proc.name} did not connect its devices to "
                                   f"{broker.url} in 60 s (exit code {proc.exitcode})")
            run.watched[proc.name.removeprefix("bench-")] = psutil.Process(proc.pid)
        yield run
        dead = [p.name for p in procs if not p.is_alive()]
        if dead:
            raise RuntimeError(f"publisher processes {', '.join(dead)} ended early; see the"
                               " error above")
    finally:
        control.stop.set()
        for proc in procs:
            proc.join(timeout=20)
            if proc.is_alive():
                proc.terminate()


# The shared subscription groups of the gateways and of the ceiling's subscribers when the
# bench runs more than one. Two names: a ceiling subscriber still registered when the
# gateways start (its connection not yet closed by the broker) must not be a member of the
# gateways' group, where it would be handed readings it never takes.
SHARE_GROUP = "bench"
CEILING_SHARE_GROUP = "bench-ceiling"


@contextmanager
def subscribers(broker: MosquittoProcess, receive_maximum: int,
                 count: int) -> Iterator[tuple[Callable[[], float], list[int]]]:
    """``count`` plain subscribers, on one shared subscription when more than one (as the
    gateways run), counting what they receive; yields the count and their pids."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    received = context.Array("q", count, lock=False)
    group = CEILING_SHARE_GROUP if count > 1 else None
    procs, readies = [], []
    for index in range(count):
        ready = context.Event()
        proc = context.Process(target=load.subscribe, name=f"bench-subscriber-{index}", args=(
            broker.host, broker.port, receive_maximum, _Slot(received, index), stop, ready,
            index, group))
        proc.start()
        procs.append(proc)
        readies.append(ready)
    try:
        for ready, proc in zip(readies, procs, strict=True):
            if not ready.wait(30):
                raise RuntimeError(f"ceiling subscriber {proc.name} did not subscribe at"
                                   f" {broker.url} in 30 s (exit code {proc.exitcode})")
        yield (lambda: float(sum(received[:]))), [p.pid for p in procs if p.pid is not None]
    finally:
        stop.set()
        for proc in procs:
            proc.join(timeout=20)
            if proc.is_alive():
                proc.terminate()


class _Slot:
    """One subscriber's counter: an element of a shared array, used as ``.value``."""

    def __init__(self, array: Any, index: int) -> None:
        self._array, self._index = array, index

    @property
    def value(self) -> int:
        return int(self._array[self._index])

    @value.setter
    def value(self, number: int) -> None:
        self._array[self._index] = number


@contextmanager
def gateways(url: str, broker: MosquittoProcess, root: Path,
              count: int) -> Iterator[tuple[list[psutil.Process], list[int]]]:
    """``aidlink gateway`` processes, with the batching settings of the environment, each with
    its metrics on its own port; more than one share one subscription (``--share``). Yields the
    processes and their metrics ports."""
    env = {**os.environ, "AIDLINK_DATABASE_URL": url, "AIDLINK_MQTT_URL": broker.url}
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    logs: list[Path] = []
    try:
        for index in range(count):
            port = find_free_port()
            command = [sys.executable, "-c", "from gateway.cli import main; main()", "gateway",
                       "--health-port", str(port), "--client-id", f"bench-gateway-{index}"]
            if count > 1:
                command += ["--share", SHARE_GROUP]
            log_path = root / f"gateway-{index}.log"
            with log_path.open("wb") as log:
                procs.append(subprocess.Popen(command, env=env, stdout=log,
                                              stderr=subprocess.STDOUT))
            ports.append(port)
            logs.append(log_path)
        deadline = time.monotonic() + 30
        for proc, port, log_path in zip(procs, ports, logs, strict=True):
            # Subscribed, not just connected: the gateway logs its connection when it sends
            # SUBSCRIBE, and a reading published before the broker has the subscription
            # goes nowhere.
            while not _subscribed(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"a gateway did not subscribe at {broker.url} (exit"
                                       f" code {proc.poll()}): {log_path.read_text()[-2000:]}")
                time.sleep(0.05)
        yield [psutil.Process(p.pid) for p in procs], ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _subscribed(health_port: int) -> bool:
    """Whether a gateway reports itself connected, which it does from its SUBACK."""
    answer = healthz(health_port)
    return answer is not None and bool(answer[1].get("connected"))
