"""The load side of ``aidlink bench api``: the fleet, the stored history and the live ingestion.

- ``seed_fleet`` registers patients with a cuff, an oximeter, a scale and a glucose meter each,
  through the provisioning service, so devices, assignments and patient pseudonyms are exactly
  what the gateway and the API work with; and hubs with paired cuffs for the live load.
- ``fill_history`` writes the stored history with server-side SQL (``generate_series``), in
  chunks per month and block of patients so each month's partition exists before its rows. The
  row templates (codes, MDC, units, panels, flags) come from decoding real payloads with the
  adapters, so the rows are shaped like the gateway's own.
The live load is published by ``gateway.bench_ingest_load.publish`` (see ``bench_api``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from adapters.model import DecodeContext, Observation
from adapters.registry import ADAPTERS
from gateway import db
from gateway.bench import sample_payloads
from provisioning import service
from provisioning.patients import patient_key

PRINCIPAL = "20"
SYSTOLIC = "8480-6"
Say = Callable[[str], None]

# One kind of device per patient: (model, channel, share of the patient's rows). A blood
# pressure reading is four rows (systolic, diastolic, MAP as one panel, and pulse); a
# spot-check two (SpO2 and pulse); weight and glucose one each. Glucose takes the remainder.
_KINDS = (("sim-bpm", "ble/2a35", 0.48), ("sim-oximeter", "ble/2a5e", 0.24),
          ("sim-scale", "ble/2a9d", 0.12), ("sim-glucose", "ble/2a18", 0.16))
# Plausible values per LOINC code: (low, high, decimals). Diastolic and MAP follow systolic.
_RANGES = {"8480-6": (105, 165, 0), "8867-4": (52, 98, 0), "2708-6": (91, 99.5, 1),
           "29463-7": (48, 112, 1), "15074-8": (4, 13.5, 1)}
_PATIENT_BLOCK = 100


@dataclass(frozen=True, slots=True)
class Fleet:
    """What the bench registered."""

    patients: list[str]
    # Per kind of device, (device id, patient pseudonym) in patient order.
    devices: dict[str, list[tuple[str, str]]]
    # Hub client id and the cuffs that publish through it, for the live load.
    hubs: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def ingest_cuffs(self) -> list[str]:
        """Every cuff of the live load."""
        return [cuff for _, cuffs in self.hubs for cuff in cuffs]


def seed_fleet(url: str, secret: bytes, *, patients: int, days: int, hubs: int,
               cuffs_per_hub: int, say: Say) -> Fleet:
    """Register the principal, the patients with their four devices, and the publishing hubs.

    Assignments are backdated past the history, as if the devices had been at home all along.
    """
    started = time.perf_counter()
    refs = [f"bench-{n:06d}" for n in range(1, patients + 1)]
    devices: dict[str, list[tuple[str, str]]] = {model: [] for model, _, _ in _KINDS}
    hub_rows: list[tuple[str, list[str]]] = []
    with psycopg.connect(url) as conn:
        service.add_principal(conn, PRINCIPAL, "Region Dalarna")
        for n, ref in enumerate(refs):
            for model, _, _ in _KINDS:
                device = service.onboard_device(conn, principal=PRINCIPAL, model=model,
                                                serial=f"{ref}-{model}", actor="bench")
                service.assign(conn, secret, device_id=device["device_id"], patient=ref,
                               basis="HSL", actor="bench")
                devices[model].append((str(device["device_id"]),
                                       patient_key(secret, PRINCIPAL, ref)))
            if n % 200 == 199:
                conn.commit()
                say(f"registered {n + 1:,} of {patients:,} patients")
        for h in range(hubs):
            hub = service.onboard_device(conn, principal=PRINCIPAL, model="sim-hub",
                                         serial=f"bench-hub-{h:04d}", actor="bench")
            cuffs = []
            for c in range(cuffs_per_hub):
                cuff = service.onboard_device(conn, principal=PRINCIPAL, model="sim-bpm",
                                              serial=f"bench-live-{h:04d}-{c:03d}",
                                              actor="bench")
                service.pair(conn, peripheral_id=cuff["device_id"], hub_id=hub["device_id"],
                             actor="bench")
                service.assign(conn, secret, device_id=cuff["device_id"],
                               patient=f"live-{h:04d}-{c:03d}", basis="HSL", actor="bench")
                cuffs.append(str(cuff["device_id"]))
            hub_rows.append((str(hub["client_id"]), cuffs))
        conn.execute("UPDATE assignments SET valid_from = now() - make_interval(days => %s)",
                     (days + 1,))
    say(f"registered {patients:,} patients with {patients * len(_KINDS):,} devices and "
        f"{hubs} hubs in {time.perf_counter() - started:.1f} s")
    return Fleet(refs, devices, hub_rows)


@dataclass(frozen=True, slots=True)
class _Template:
    """The rows one reading of a kind of device makes, as the adapter decoded them."""

    model: str
    channel: str
    rows: list[Observation]


def _templates() -> list[_Template]:
    samples = sample_payloads(count=1)
    out = []
    for model, channel, _ in _KINDS:
        decoded = ADAPTERS[channel](samples[channel][0], DecodeContext())
        rows = [r for r in decoded if isinstance(r, Observation) and r.code in
                (*_RANGES, "8462-4", "8478-0")]
        out.append(_Template(model, channel, rows))
    return out


def _events_per_patient(rows: int) -> list[int]:
    """Readings per patient and kind, so that a patient's rows add up to ``rows`` exactly."""
    bp, spot, weight = (math.floor(rows * share / per) for (_, _, share), per in
                        zip(_KINDS[:3], (4, 2, 1), strict=True))
    return [bp, spot, weight, rows - 4 * bp - 2 * spot - weight]


def _value_sql(code: str) -> str:
    """The SQL for a plausible value of ``code`` from the reading's random numbers."""
    if code == "8462-4":  # diastolic: below systolic by a pulse pressure of 30-60
        return "(sys - 30 - floor(r2 * 31))::numeric"
    if code == "8478-0":  # mean arterial pressure from systolic and diastolic
        return "round(((sys - 30 - floor(r2 * 31)) * 2 + sys)::numeric / 3, 1)"
    if code == SYSTOLIC:
        return "sys::numeric"
    low, high, places = _RANGES[code]
    return f"round(({low} + r3 * {high - low})::numeric, {places})"


def _chunk_sql(template: _Template) -> str:
    # Readings of a device fall on a regular grid of `step` seconds from `start` with a
    # jitter that is a hash of (device, i): so a reading lands in exactly one month chunk
    # however often its neighbourhood is generated. Values use random(), drawn once per
    # reading in the materialised CTE so the rows of one panel agree with each other.
    selects = []
    for n, row in enumerate(template.rows):
        selects.append(
            f"SELECT ts, device_id, '{row.code}', %(principal)s, patient_key,"
            f" {'NULL' if row.mdc is None else row.mdc}, {_value_sql(row.code)},"
            f" %(unit_{n})s, ts, %(flags_{n})s::text[],"
            f" {'NULL' if row.panel is None else repr(row.panel)},"
            f" {'NULL' if row.device_user is None else row.device_user}::smallint,"
            f" %(channel)s, ts + make_interval(secs => 2 + r1 * 30),"
            f" {'i' if row.sequence is not None else 'NULL::integer'} FROM e")
    return (
        "WITH e AS MATERIALIZED (SELECT *, 105 + floor(r1 * 61)::int AS sys FROM ("
        "  SELECT d.device_id, d.patient_key, g.i::int AS i, random() AS r1, random() AS r2,"
        "   random() AS r3,"
        "   %(start)s + make_interval(secs => floor(g.i * %(step)s + (abs(hashtext(d.device_id"
        "    || ':' || g.i)) %% 10000) / 10000.0 * (%(step)s - 1))) AS ts"
        "  FROM unnest(%(ids)s::text[], %(keys)s::text[]) AS d(device_id, patient_key)"
        "  CROSS JOIN generate_series(%(first)s::bigint, %(last)s::bigint) AS g(i)"
        " ) AS grid WHERE ts >= %(from)s AND ts < %(to)s)"
        " INSERT INTO observations (ts, device_id, code, principal_code, patient_key, mdc,"
        " value, unit, measured_at, flags, panel, device_user, channel, received_at, sequence) "
        + " UNION ALL ".join(selects)
    )


def _months(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    spans = []
    month = db.month_start(start)
    while month < end:
        following = (month + timedelta(days=32)).replace(day=1)
        spans.append((max(month, start), min(following, end)))
        month = following
    return spans


def fill_history(url: str, fleet: Fleet, *, observations: int, days: int, end: datetime,
                 say: Say, workers: int = 2) -> int:
    """Insert ``observations`` rows spread over the ``days`` before ``end``; rows inserted."""
    patients = len(fleet.patients)
    base, extra = divmod(observations, patients)
    end = end.replace(microsecond=0)  # device clocks have whole seconds
    start = end - timedelta(days=days)
    seconds = days * 86400
    jobs: list[tuple[str, dict[str, Any]]] = []
    for template, (model, _, _) in zip(_templates(), _KINDS, strict=True):
        sql = _chunk_sql(template)
        per_row = {f"{what}_{n}": value for n, r in enumerate(template.rows)
                   for what, value in (("flags", list(r.flags)), ("unit", str(r.unit)))}
        pairs = fleet.devices[model]
        # Patients with one row more than the others (the remainder) get it as glucose.
        groups: dict[int, list[int]] = {}
        for n in range(patients):
            readings = _events_per_patient(base + (1 if n < extra else 0))[
                [m for m, _, _ in _KINDS].index(model)]
            groups.setdefault(readings, []).append(n)
        for readings, members in groups.items():
            if readings == 0:
                continue
            step = seconds / readings
            if step < 2:
                raise ValueError(f"{readings:,} readings of {model} per patient in {days} days"
                                 " are more than one every 2 s; give more days")
            for first in range(0, len(members), _PATIENT_BLOCK):
                block = members[first:first + _PATIENT_BLOCK]
                for lo, hi in _months(start, end):
                    jobs.append((sql, {
                        "principal": PRINCIPAL, "channel": template.channel, **per_row,
                        "ids": [pairs[n][0] for n in block],
                        "keys": [pairs[n][1] for n in block], "start": start, "step": step,
                        "first": max(0, math.floor((lo - start).total_seconds() / step) - 1),
                        "last": min(readings - 1,
                                    math.ceil((hi - start).total_seconds() / step) + 1),
                        "from": lo, "to": hi}))
    with psycopg.connect(url, autocommit=True) as conn:
        if not db.uses_timescaledb(conn):
            for lo, _ in _months(start, end):
                conn.execute("SELECT aidlink_ensure_observation_partition(%s)", (lo,))
    done = 0
    lock = threading.Lock()
    started = time.perf_counter()

    def run(job: tuple[str, dict[str, Any]]) -> None:
        nonlocal done
        with psycopg.connect(url, autocommit=True) as conn:
            inserted = conn.execute(job[0].encode(), job[1]).rowcount
        with lock:
            done += inserted
            rate = done / max(time.perf_counter() - started, 1e-9)
            say(f"stored {done:,} of {observations:,} observations ({rate:,.0f} rows/s)")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(run, jobs))
    say("VACUUM ANALYZE observations, then CHECKPOINT")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) observations")
        # The load leaves gigabytes of dirty pages. A checkpoint writing them out while the
        # reads are timed would stall each request's commit (its access-log entry) for what
        # the loading did, which no deployment serving its readers has just done.
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            say("no CHECKPOINT: this user may not (it needs pg_checkpoint); the load's pages"
                " may still be written out while the reads are timed")
    return done


def stored_readings(url: str, cuffs: list[str]) -> int:
    """Blood-pressure readings of the live cuffs stored so far (one systolic row each)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM observations WHERE device_id = ANY(%s)"
                           " AND code = %s", (cuffs, SYSTOLIC)).fetchone()
    return 0 if row is None else int(row[0])

