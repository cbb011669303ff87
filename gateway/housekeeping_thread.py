"""Housekeeping on a schedule, beside the gateway: data retention and the broker's credentials.

``Housekeeping`` runs one data round per interval (and one at start):
``retention.apply_retention`` removes what the principals' policies no longer keep (and
records the run), then ``refresh_aggregates`` brings ``observation_daily`` up to date, which
also drops the aggregates of removed readings. A round that finds another retention run in
progress (the CLI) skips retention and still refreshes.

``CredentialsRefresh`` re-signs the per-principal CRLs in a broker directory written by
``aidlink broker-config``, rewrites its password and ACL files and reloads the broker running
on it. Each CRL is valid for ``provisioning.ca.CRL_LIFETIME`` (7 days) and Mosquitto refuses
every device of a principal whose CRL is past its next update, so the default interval (6
hours) leaves many chances to recover from failed rounds before that happens.

A failed round of either is logged and retried at the next interval.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import psycopg

from gateway import retention
from provisioning import broker_config
from provisioning.ca import CRL_LIFETIME
from provisioning.errors import ProvisioningError

log = logging.getLogger("aidlink.housekeeping")

DEFAULT_CREDENTIALS_INTERVAL_S = 6 * 3600


def credentials_interval_error(seconds: int, name: str) -> str | None:
    """Why ``seconds`` (given as ``name``) is too long between broker refreshes, or None.

    At most half the CRL lifetime: a failed refresh then still has another chance before
    the CRLs lapse and the broker refuses every device."""
    lifetime = int(CRL_LIFETIME.total_seconds())
    if seconds * 2 > lifetime:
        return (f"{name} {seconds} s is too long: the CRLs are valid for {lifetime} s;"
                " use at most half of that")
    return None


class BrokerPidError(ProvisioningError):
    """The broker directory's pid file names a process that cannot be the broker."""


class _Schedule:
    """A round at start and then one per interval, in a thread of its own until ``stop()``;
    ``rounds`` counts the finished ones and ``last`` keeps the latest result."""

    what = "round"

    def __init__(self, interval_s: float, thread_name: str) -> None:
        if interval_s <= 0:
            raise ValueError(f"{self.what} interval must be positive, not {interval_s}")
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
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
        """One round now, in the calling thread."""
        result = self._round()
        self.last = result
        self.rounds += 1
        return result

    def _round(self) -> dict[str, Any]:
        raise NotImplementedError

    def _report(self, result: dict[str, Any]) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                result = self.run_once()
            except (psycopg.Error, OSError, ProvisioningError) as exc:
                log.warning("%s failed: %s", self.what, exc)
            else:
                self._report(result)
            self._stop.wait(self._interval_s)


class Housekeeping(_Schedule):
    """A started data housekeeping schedule: retention, then the daily aggregates."""

    what = "data housekeeping round"

    def __init__(self, database_url: str, interval_s: float) -> None:
        super().__init__(interval_s, "aidlink-housekeeping")
        self._database_url = database_url

    def _round(self) -> dict[str, Any]:
        """``{"retention": …, "aggregates": …}``."""
        return data_round(self._database_url)

    def _report(self, result: dict[str, Any]) -> None:
        log_data_round(result)


class CredentialsRefresh(_Schedule):
    """A started refresh schedule of the broker files under ``broker_dir``."""

    what = "broker credentials refresh"

    def __init__(self, database_url: str, passphrase: bytes, broker_dir: Path,
                 interval_s: float = DEFAULT_CREDENTIALS_INTERVAL_S) -> None:
        super().__init__(interval_s, "aidlink-credentials")
        self._database_url = database_url
        self._passphrase = passphrase
        self._broker_dir = broker_dir

    def _round(self) -> dict[str, Any]:
        return refresh_broker(self._database_url, self._passphrase, self._broker_dir)

    def _report(self, result: dict[str, Any]) -> None:
        log_credentials_round(result)


def data_round(database_url: str) -> dict[str, Any]:
    """Apply retention and refresh the daily aggregates: ``{"retention": …, "aggregates": …}``."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        try:
            removed: dict[str, Any] = retention.apply_retention(conn)
        except retention.RetentionBusyError as exc:
            removed = {"skipped": str(exc)}
        aggregates = retention.refresh_aggregates(conn)
    return {"retention": removed, "aggregates": aggregates}


def log_data_round(result: dict[str, Any]) -> None:
    """One log line for a finished data round; a warning when retention recorded an error."""
    removed = result["retention"]
    if "error" in removed:
        log.warning("retention run %s: %s", removed.get("run_id"), removed["error"])
    elif "skipped" in removed:
        log.info("retention skipped (%s); daily aggregates refreshed", removed["skipped"])
    else:
        log.info("retention run %s removed %s, partitions dropped %s; daily aggregates"
                 " refreshed", removed.get("run_id"), removed.get("principals"),
                 removed.get("partitions_dropped"))


def refresh_broker(database_url: str, passphrase: bytes, broker_dir: Path) -> dict[str, Any]:
    """Re-sign the CRLs, rewrite the password and ACL files under ``broker_dir`` and SIGHUP
    the broker whose pid file is there, if it runs; the result of ``refresh_credentials``."""
    out = broker_dir.absolute()
    pid = broker_config.running_pid(out)
    if pid == os.getpid():
        # Possible when the broker runs in another pid namespace (a container) and its pid
        # happens to be ours here: the SIGHUP meant for it would end this process.
        raise BrokerPidError(f"{out / broker_config.PID_FILE} names this process ({pid}): the"
                             " broker runs in another pid namespace; share it (Compose:"
                             " pid: \"service:mosquitto\")")
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        result = broker_config.refresh_credentials(conn, passphrase, out, broker_pid=pid)
        conn.commit()
    return result


def log_credentials_round(result: dict[str, Any]) -> None:
    """One log line for a finished refresh; a warning when no broker was there to reload."""
    if result["reloaded"]:
        log.info("broker credentials refreshed: %d CRLs re-signed, %d password users,"
                 " %d clients denied; broker reloaded", result["crls"],
                 result["password_users"], result["denied_clients"])
    else:
        log.warning("broker credentials refreshed: %d CRLs re-signed, %d password users,"
                    " %d clients denied; no running broker found to reload (no live pid in"
                    " its pid file)", result["crls"], result["password_users"],
                    result["denied_clients"])
