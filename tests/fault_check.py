"""The fault suite's checker: the store against what the broker acknowledged.

A reading is (device, seq): its stored time is ``BASE + seq`` seconds (see fault_fleet). A
gap is a reading the broker PUBACKed that is not stored; a duplicate is a reading stored more
than once (observations have a natural key, so that means the key failed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from tests.fault_fleet import BASE, CODES_PER_READING, SYSTOLIC


@dataclass(slots=True)
class Report:
    """What the store holds against what the broker acknowledged."""

    acked: int = 0
    stored: int = 0
    # (device, seq) PUBACKed by the broker and not stored: lost.
    gaps: dict[str, list[int]] = field(default_factory=dict)
    # (device, seq) stored more often than once (a reading is three rows: one per code).
    duplicates: dict[str, list[int]] = field(default_factory=dict)
    # Readings stored but never acknowledged: sent, then the ack was lost with a connection.
    unacked_stored: int = 0
    dead_letters: int = 0
    gap_events: list[dict[str, Any]] = field(default_factory=list)
    duplicate_gap_events: int = 0

    @property
    def lost(self) -> int:
        """How many acknowledged readings are missing."""
        return sum(len(v) for v in self.gaps.values())

    def uncovered(self) -> dict[str, list[int]]:
        """Lost readings no ``ingest.gap`` event names (client = device here)."""
        covered: dict[str, set[int]] = {}
        for data in self.gap_events:
            covered.setdefault(data["client"], set()).update(range(data["from"], data["to"] + 1))
        result = {d: [s for s in seqs if s not in covered.get(d, set())]
                  for d, seqs in self.gaps.items()}
        return {d: seqs for d, seqs in result.items() if seqs}

    def text(self) -> str:
        """One line for assertion messages."""
        return (f"acked {self.acked}, stored {self.stored}, lost {self.lost}"
                f" {_ranges(self.gaps)}, duplicated {_ranges(self.duplicates)},"
                f" stored without ack {self.unacked_stored}, dead letters {self.dead_letters},"
                f" gap events {len(self.gap_events)}")


def check(url: str, acked: dict[str, set[int]]) -> Report:
    """Compare the store with what was acknowledged; every gap and duplicate, per device."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT device_id, ts, count(*), count(DISTINCT code) FROM observations"
            " WHERE device_id = ANY(%s) GROUP BY device_id, ts",
            (sorted(acked),),
        ).fetchall()
        events = conn.execute(
            "SELECT data, count(*) FROM events WHERE type = 'ingest.gap'"
            " GROUP BY data ORDER BY min(occurred_at)").fetchall()
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    report = Report(acked=sum(len(s) for s in acked.values()),
                    dead_letters=0 if dead is None else int(dead[0]))
    stored: dict[str, set[int]] = {}
    for device_id, ts, total, codes in rows:
        seq = round((ts - BASE).total_seconds())
        stored.setdefault(device_id, set()).add(seq)
        if total != CODES_PER_READING or codes != CODES_PER_READING:
            report.duplicates.setdefault(device_id, []).append(seq)
    report.stored = sum(len(s) for s in stored.values())
    for device_id, seqs in acked.items():
        missing = sorted(seqs - stored.get(device_id, set()))
        if missing:
            report.gaps[device_id] = missing
        report.unacked_stored += len(stored.get(device_id, set()) - seqs)
    report.gap_events = [data for data, _ in events]
    report.duplicate_gap_events = sum(n - 1 for _, n in events)
    return report


def stored_count(url: str) -> int:
    """Readings stored so far (systolic rows: one per reading)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM observations WHERE code = %s",
                           (SYSTOLIC,)).fetchone()
    return 0 if row is None else int(row[0])


def _ranges(per_device: dict[str, list[int]]) -> str:
    """``{device: [1, 2, 3, 7]}`` as ``device:1-3,7``; the first few devices only."""
    parts = []
    for device_id, seqs in list(per_device.items())[:5]:
        spans: list[str] = []
        start = prev = seqs[0]
        for seq in [*seqs[1:], None]:
            if seq is not None and seq == prev + 1:
                prev = seq
                continue
            spans.append(str(start) if start == prev else f"{start}-{prev}")
            if seq is not None:
                start = prev = seq
        parts.append(f"{device_id}:{','.join(spans)}")
    more = "" if len(per_device) <= 5 else f" (+{len(per_device) - 5} devices)"
    return "{" + " ".join(parts) + more + "}"
