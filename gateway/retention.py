"""Data lifecycle: per-principal retention of observations and raw payloads, daily aggregates.

Observations of every principal share one table, partitioned by month (or a TimescaleDB
hypertable with 7-day chunks), so a principal's retention cannot simply drop its partitions:

* A whole partition (or chunk, through ``drop_chunks``) is dropped only when its entire range
  is older than EVERY principal's ``observation_retention_days``: then no principal needs any
  row in it. Dropping is cheap and leaves no dead tuples; it waits at most ``_LOCK_TIMEOUT``
  for its lock on the parent, so ingestion is never queued behind it for long (a drop that
  times out is retried at the next run).
* A principal with a shorter retention loses its older rows by ``DELETE`` in batches of
  ``BATCH_ROWS`` rows, committed one by one, so no statement holds row locks or a snapshot
  for long while the gateway writes.

Raw payloads are the bytes (or message fields) as a device sent them. Two places keep them:
``dead_letters.payload`` (the undecodable message) and ``events.data.raw`` (the fields of a
SCAIP request or the block of a DC-09 frame). Past the principal's
``raw_payload_retention_days`` (counted from when aidlink last received the message) the
dead letter's bytes are set to NULL and ``payload_removed_at`` is set, while the row keeps its
reason, detail, topic, count and SHA-256: they are operational evidence of what failed and
how often, and the hash still folds a redelivery into the same row. Events lose only their
``raw`` key; the decoded event stays for the observation-independent event history. Dead
letters no principal can be named for keep their payload no longer than the shortest
``raw_payload_retention_days`` of any principal (or the default policy's).

The access log is never touched: it references no reading, and the patient-data law wants
it kept for at least five years whatever happens to the measurements.

Every run that is not a dry run is recorded in ``retention_runs``: what went per principal
and table, which partitions were dropped, and the error if the run stopped part-way.

Daily aggregates (``observation_daily``, migration 0010) are a materialised view that
``refresh_aggregates`` rebuilds with ``REFRESH MATERIALIZED VIEW CONCURRENTLY`` (readers are not
blocked); a refresh after retention drops the aggregates of removed readings. On TimescaleDB
without row security on observations the migration makes a continuous aggregate instead, kept
fresh by its own policy and refreshed here as well.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from gateway.db import uses_timescaledb
from provisioning.policy import Policy, current_policy

Conn = psycopg.Connection[Any]

BATCH_ROWS = 10_000
# How long a partition drop may wait for its lock on observations before giving up.
_LOCK_TIMEOUT = "5s"
# Any constant works; it keeps two retention runs (CLI and housekeeping) from interleaving.
_RETENTION_LOCK = 0x616964_72657400
# Results name dead letters without a known principal so; a principal code cannot look so.
UNATTRIBUTED = "(unattributed)"


class RetentionBusyError(Exception):
    """Another retention run holds the lock; the message says so."""


@dataclass(frozen=True)
class _Cutoffs:
    observations: datetime
    raw_payloads: datetime


def _cutoffs(conn: Conn, now: datetime) -> dict[str, _Cutoffs]:
    codes = [row[0] for row in conn.execute("SELECT code FROM principals ORDER BY code")]
    result = {}
    for code in codes:
        policy = current_policy(conn, code)
        result[code] = _Cutoffs(now - timedelta(days=policy.observation_retention_days),
                                now - timedelta(days=policy.raw_payload_retention_days))
    return result


def _droppable_partitions(conn: Conn, before: datetime) -> list[tuple[str, str]]:
    """(schema, name) of each observations partition (or chunk) wholly before ``before``."""
    if uses_timescaledb(conn):
        rows = conn.execute(
            "SELECT n.nspname, c.relname FROM show_chunks('observations', older_than => %s) s"
            " JOIN pg_class c ON c.oid = s JOIN pg_namespace n ON n.oid = c.relnamespace"
            " ORDER BY c.relname", (before,),
        ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]
    # The bound reads FOR VALUES FROM ('…') TO ('…'); a DEFAULT or MAXVALUE partition has no
    # quoted upper bound, never matches, and is never dropped.
    rows = conn.execute(
        "SELECT nspname, relname FROM ("
        "  SELECT n.nspname, c.relname, (regexp_match(pg_get_expr(c.relpartbound, c.oid),"
        "         'TO \\(''([^'']+)''\\)'))[1]::timestamptz AS upper_bound"
        "  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        "  JOIN pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE i.inhparent = 'observations'::regclass) p"
        " WHERE upper_bound <= %s ORDER BY relname", (before,),
    ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def _rows_by_principal(conn: Conn, schema: str, name: str) -> dict[str, int]:
    query = sql.SQL("SELECT principal_code, count(*) FROM {} GROUP BY principal_code").format(
        sql.Identifier(schema, name))
    return {str(code): int(n) for code, n in conn.execute(query)}


def _drop_partitions(conn: Conn, parts: list[tuple[str, str]], before: datetime) -> None:
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(_LOCK_TIMEOUT)))
        if uses_timescaledb(conn):
            conn.execute("SELECT drop_chunks('observations', older_than => %s)", (before,))
        else:
            for schema, name in parts:
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, name)))
    conn.commit()


def _batched(conn: Conn, statement: str, params: dict[str, Any]) -> int:
    """Run a bounded DELETE/UPDATE until it touches fewer than BATCH_ROWS rows; the total."""
    total = 0
    while True:
        with conn.transaction():
            done = conn.execute(statement.encode(), {**params, "n": BATCH_ROWS}).rowcount
        conn.commit()
        total += max(done, 0)
        if done < BATCH_ROWS:
            return total


_DELETE_OBSERVATIONS = (
    "DELETE FROM observations o USING ("
    "  SELECT device_id, code, ts FROM observations"
    "  WHERE principal_code = %(p)s AND ts < %(cut)s LIMIT %(n)s) old"
    " WHERE o.device_id = old.device_id AND o.code = old.code AND o.ts = old.ts"
    " AND o.ts < %(cut)s"
)
_COUNT_OBSERVATIONS = (
    "SELECT count(*) FROM observations WHERE principal_code = %(p)s AND ts < %(cut)s"
)

# Dead letters of one principal, or (p NULL) those of no known principal.
_DEAD_LETTER_WHERE = (
    " payload IS NOT NULL AND last_seen < %(cut)s AND (principal_code = %(p)s OR"
    " (%(p)s::text IS NULL AND (principal_code IS NULL OR principal_code <> ALL(%(known)s))))"
)
_REMOVE_DEAD_LETTER_PAYLOADS = (
    "UPDATE dead_letters SET payload = NULL, payload_removed_at = now() WHERE id IN ("
    " SELECT id FROM dead_letters WHERE" + _DEAD_LETTER_WHERE + " LIMIT %(n)s)"
)
_COUNT_DEAD_LETTER_PAYLOADS = "SELECT count(*) FROM dead_letters WHERE" + _DEAD_LETTER_WHERE

_EVENT_RAW_WHERE = " principal_code = %(p)s AND data ? 'raw' AND received_at < %(cut)s"
_STRIP_EVENT_RAW = (
    "UPDATE events SET data = data - 'raw' WHERE id IN ("
    " SELECT id FROM events WHERE" + _EVENT_RAW_WHERE + " LIMIT %(n)s)"
)
_COUNT_EVENT_RAW = "SELECT count(*) FROM events WHERE" + _EVENT_RAW_WHERE


def _count(conn: Conn, statement: str, params: dict[str, Any]) -> int:
    row = conn.execute(statement.encode(), params).fetchone()
    return 0 if row is None else int(row[0])


def _empty_counts() -> dict[str, int]:
    return {"observations": 0, "dead_letter_payloads": 0, "event_raw_payloads": 0}


def apply_retention(conn: Conn, now: datetime | None = None, *,
                    dry_run: bool = False) -> dict[str, Any]:
    """Remove what each principal's policy no longer keeps (or, dry, count it); the summary.

    Commits as it goes (see the module docstring); ``now`` is the moment retention is counted
    back from. Raises RetentionBusyError while another run holds the lock.
    """
    reference = (now or datetime.now(UTC)).astimezone(UTC)
    started = datetime.now(UTC)
    conn.commit()
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_RETENTION_LOCK,)).fetchone()
    conn.commit()
    if row is None or not row[0]:
        raise RetentionBusyError("another retention run is in progress (advisory lock held)")
    removed: dict[str, dict[str, int]] = {}
    dropped: list[str] = []
    error: str | None = None
    try:
        cutoffs = _cutoffs(conn, reference)
        removed.update({code: _empty_counts() for code in cutoffs})
        try:
            _observations(conn, cutoffs, removed, dropped, dry_run)
            _raw_payloads(conn, cutoffs, reference, removed, dry_run)
        except psycopg.Error as exc:
            conn.rollback()
            error = f"retention stopped: {str(exc).strip().splitlines()[0]}"
            if dry_run:
                raise
        run_id = None if dry_run else _record(conn, started, reference, removed, dropped, error)
    finally:
        # Whatever was done is committed by now; a failed statement must not block the unlock.
        conn.rollback()
        conn.execute("SELECT pg_advisory_unlock(%s)", (_RETENTION_LOCK,))
        conn.commit()
    result: dict[str, Any] = {
        "dry_run": dry_run, "run_id": run_id, "reference_time": reference.isoformat(),
        "principals": {
            code: {
                "observation_cutoff": cut.observations.isoformat(),
                "raw_payload_cutoff": cut.raw_payloads.isoformat(),
                **removed[code],
            } for code, cut in cutoffs.items()
        },
        "partitions_dropped": dropped,
    }
    # Rows of principal codes no longer registered, removed with a dropped partition, and dead
    # letters of no known principal.
    result["other"] = {code: counts for code, counts in removed.items() if code not in cutoffs}
    if error is not None:
        result["error"] = error
    return result


def _observations(conn: Conn, cutoffs: dict[str, _Cutoffs], removed: dict[str, dict[str, int]],
                  dropped: list[str], dry_run: bool) -> None:
    if not cutoffs:
        return
    oldest_needed = min(cut.observations for cut in cutoffs.values())
    parts = _droppable_partitions(conn, oldest_needed)
    in_dropped: dict[str, int] = {}
    for schema, name in parts:
        for code, n in _rows_by_principal(conn, schema, name).items():
            in_dropped[code] = in_dropped.get(code, 0) + n
    if parts and not dry_run:
        _drop_partitions(conn, parts, oldest_needed)
    dropped.extend(name for _, name in parts)
    for code, n in in_dropped.items():
        removed.setdefault(code, _empty_counts())["observations"] += n
    for code, cut in cutoffs.items():
        params = {"p": code, "cut": cut.observations}
        if dry_run:
            # What the drops above already account for is not counted twice.
            rest = _count(conn, _COUNT_OBSERVATIONS, params) - in_dropped.get(code, 0)
        else:
            rest = _batched(conn, _DELETE_OBSERVATIONS, params)
        removed[code]["observations"] += rest
    conn.commit()


def _raw_payloads(conn: Conn, cutoffs: dict[str, _Cutoffs], reference: datetime,
                  removed: dict[str, dict[str, int]], dry_run: bool) -> None:
    known = list(cutoffs)
    strictest = max((cut.raw_payloads for cut in cutoffs.values()),
                    default=reference - timedelta(days=Policy().raw_payload_retention_days))
    targets: list[tuple[str | None, datetime]] = [(c, cut.raw_payloads)
                                                  for c, cut in cutoffs.items()]
    targets.append((None, strictest))
    for code, cut in targets:
        params = {"p": code, "cut": cut, "known": known}
        if dry_run:
            letters = _count(conn, _COUNT_DEAD_LETTER_PAYLOADS, params)
            raw = 0 if code is None else _count(conn, _COUNT_EVENT_RAW, params)
        else:
            letters = _batched(conn, _REMOVE_DEAD_LETTER_PAYLOADS, params)
            raw = 0 if code is None else _batched(conn, _STRIP_EVENT_RAW, params)
        if code is None and letters == 0:
            continue
        counts = removed.setdefault(UNATTRIBUTED if code is None else code, _empty_counts())
        counts["dead_letter_payloads"] += letters
        counts["event_raw_payloads"] += raw
    conn.commit()


def _record(conn: Conn, started: datetime, reference: datetime,
            removed: dict[str, dict[str, int]], dropped: list[str], error: str | None) -> int:
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO retention_runs (started_at, finished_at, reference_time, removed,"
            " partitions_dropped, error) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (started, datetime.now(UTC), reference, Jsonb(removed), dropped, error),
        ).fetchone()
    conn.commit()
    assert row is not None
    return int(row[0])


def refresh_aggregates(conn: Conn) -> dict[str, Any]:
    """Bring observation_daily up to date; what was refreshed, how, and how long it took."""
    began = time.monotonic()
    conn.commit()
    kind = conn.execute(
        "SELECT relkind FROM pg_class WHERE oid = 'observation_daily'::regclass").fetchone()
    if kind is not None and kind[0] != "m":
        # Not a materialised view: the continuous aggregate migration 0010 made on a hypertable
        # without row security. It refreshes outside any transaction, here over the whole
        # range, so the invalidations retention's deletes logged are processed too.
        previous = conn.autocommit
        conn.autocommit = True
        try:
            conn.execute("CALL refresh_continuous_aggregate('observation_daily', NULL, NULL)")
        finally:
            conn.autocommit = previous
        mode = "continuous_aggregate"
    else:
        with conn.transaction():
            conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY observation_daily")
        mode = "materialized_view"
    row = conn.execute("SELECT count(*) FROM observation_daily").fetchone()
    conn.commit()
    return {
        "view": "observation_daily", "mode": mode, "rows": 0 if row is None else int(row[0]),
        "seconds": round(time.monotonic() - began, 3),
    }
