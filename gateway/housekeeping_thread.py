"""Data housekeeping on a schedule, beside the gateway: retention, then the daily aggregates.

One round per interval (and one at start): ``retention.apply_retention`` removes what the
principals' policies no longer keep (and records the run), then ``refresh_aggregates`` brings
``observation_daily`` up to date, which also drops the aggregates of removed readings. A
failed round is logged and retried at the next interval; a round that finds another retention
run in progress (the CLI) skips retention and still refreshes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg

from gateway import retention

log = logging.getLogger("aidlink.housekeeping")


class Housekeeping:
    """A started housekeeping schedule, stopped with ``stop()``; ``rounds`` counts finished ones."""

    def __init__(self, database_url: str, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"housekeeping interval must be positive, not {interval_s}")
        self._database_url = database_url
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aidlink-housekeeping",
                                        daemon=True)
        self.rounds = 0
        self.last: dict[str, Any] | None = None

    def start(self) -> None:
        """Start the schedule; the first round runs at once."""
        self._thread.start()

    def stop(self) -> None:
        """End the schedule after the round in progress."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def run_once(self) -> dict[str, Any]:
        """One round now, in the calling thread: ``{"retention": …, "aggregates": …}``."""
        with psycopg.connect(self._database_url, connect_timeout=5) as conn:
            try:
                removed: dict[str, Any] = retention.apply_retention(conn)
            except retention.RetentionBusyError as exc:
                removed = {"skipped": str(exc)}
            aggregates = retention.refresh_aggregates(conn)
        result = {"retention": removed, "aggregates": aggregates}
        self.last = result
        self.rounds += 1
        return result

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                result = self.run_once()
            except (psycopg.Error, OSError) as exc:
                log.warning("data housekeeping round failed: %s", exc)
            else:
                removed = result["retention"]
                if "error" in removed:
                    log.warning("retention run %s: %s", removed.get("run_id"), removed["error"])
                elif removed.get("partitions_dropped") or any(
                        any(counts.values()) for counts in removed.get("principals", {}).values()):
                    log.info("retention run %s removed %s", removed["run_id"],
                             removed["principals"])
            self._stop.wait(self._interval_s)
