"""The downlink on a schedule, beside the gateway: wipe commands and renewed certificates.

Two kinds of round, in one thread so that they never overlap:
- a downlink round every ``downlink_interval_s`` (seconds: a wipe should not wait an hour):
  ``provisioning.downlink.deliver_wipes`` publishes each pending wipe command, retained with
  QoS 1, on the device's ``down/wipe`` topic and removes each confirmed one from the broker;
- a full round every ``interval_s`` (and one at start): the downlink round, then
  ``provisioning.renewal.run_round``, which renews every certificate inside its policy's
  window for the key the device holds and publishes each renewed certificate, retained with
  QoS 1, on the device's ``down/certificate`` topic.

A removed wipe command means the wipe was confirmed (or the device left reconditioning), and
the gateway has revoked the device's credentials in the registry; the broker enforces that
only once its files are rewritten. With a broker directory, the round that removed one
therefore refreshes it (``gateway.housekeeping_thread.refresh_broker``), so the device is
shut out within one downlink interval; a refresh that fails is tried again every downlink
round until one succeeds.

A failed round is logged and retried at the next interval; nothing is lost in between,
because a certificate or wipe not yet delivered stays pending in the registry.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg

from gateway.housekeeping_thread import log_credentials_round, refresh_broker
from gateway.mqtt import new_client, parse_mqtt_url
from provisioning import downlink, renewal
from provisioning.ca import Conn
from provisioning.errors import ProvisioningError

log = logging.getLogger("aidlink.renewal")
_PUBLISH_TIMEOUT_S = 10.0
_CONNECT_TIMEOUT_S = 10.0
# As AIDLINK_DOWNLINK_INTERVAL_S's default, for a loop built without the settings.
DEFAULT_DOWNLINK_INTERVAL_S = 30.0


class RenewalLoop:
    """A started downlink schedule, stopped with ``stop()``; ``rounds`` counts finished
    rounds of either kind, ``renewal_rounds`` those that renewed."""

    def __init__(self, database_url: str, mqtt_url: str, passphrase: bytes, *,
                 interval_s: float, protocol: int = 5,
                 client_id: str = "aidlink-renewal",
                 downlink_interval_s: float = DEFAULT_DOWNLINK_INTERVAL_S,
                 broker_dir: Path | None = None) -> None:
        if downlink_interval_s < 0:
            raise ValueError(f"downlink interval must not be negative: {downlink_interval_s}")
        self._database_url = database_url
        self._passphrase = passphrase
        self._interval_s = interval_s
        self._downlink_interval_s = downlink_interval_s
        self._broker_dir = broker_dir
        self._target = parse_mqtt_url(mqtt_url)
        self._client: mqtt.Client = new_client(client_id, protocol=protocol)
        if self._target.username is not None:
            self._client.username_pw_set(self._target.username, self._target.password)
        self._connected = threading.Event()
        self._answered = threading.Event()
        self._refusal: str | None = None
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = lambda c, u, f, rc, p: self._connected.clear()
        self._network = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aidlink-renewal", daemon=True)
        # Rounds from the schedule and from run_full_round() must not interleave: both would
        # publish the same pending commands.
        self._round_lock = threading.Lock()
        # Set when a removed wipe command calls for a broker refresh not yet done.
        self._sync_pending = False
        self.rounds = 0
        self.renewal_rounds = 0
        self.last: dict[str, Any] | None = None
        # The wipe commands the last round published or removed (provisioning.downlink).
        self.last_wipes: list[dict[str, Any]] = []
        # The last broker refresh after a removed wipe: refresh_broker's result, or
        # {"error": why}.
        self.last_broker: dict[str, Any] | None = None

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self._refusal = str(reason)
        else:
            self._refusal = None
            self._connected.set()
        self._answered.set()

    def start(self) -> None:
        """Connect to the broker (reconnecting on its own) and start the schedule."""
        self._client.connect_async(self._target.host, self._target.port, keepalive=30)
        self._client.loop_start()
        self._network = True
        self._thread.start()

    def stop(self) -> None:
        """End the schedule after the round in progress, and disconnect."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if self._network:
            self._client.disconnect()
            self._client.loop_stop()
            self._network = False

    def _publish(self, topic: str, payload: bytes) -> bool:
        if not self._client.is_connected():
            return False
        info = self._client.publish(topic, payload, qos=1, retain=True)
        try:
            info.wait_for_publish(_PUBLISH_TIMEOUT_S)
        except RuntimeError:  # the connection was lost before the PUBACK
            return False
        return info.is_published()

    def _ensure_connected(self) -> None:
        """Connect now unless the schedule's connection is up; OSError naming the broker
        when it cannot be reached or refuses."""
        if self._client.is_connected():
            return
        if not self._network:
            self._answered.clear()
            self._client.connect(self._target.host, self._target.port, keepalive=30)
            self._client.loop_start()
            self._network = True
            # A refusal answers at once: no reason to wait the whole timeout for it.
            self._answered.wait(_CONNECT_TIMEOUT_S)
        if not self._connected.wait(0 if self._refusal else _CONNECT_TIMEOUT_S):
            why = self._refusal or "no answer"
            raise OSError(f"broker {self._target.host}:{self._target.port} refused the"
                          f" connection: {why}")

    def run_full_round(self) -> dict[str, Any]:
        """One full round now, in the calling thread, connecting to the broker first if the
        schedule is not running: ``{"wipes": [...], "renewal": {...}, "broker": ...}`` with
        the wipe commands published or removed, ``run_round``'s result, and the broker
        refresh after a removed wipe (None when none was due)."""
        self._ensure_connected()
        return self._round(renew=True)

    def run_once(self) -> dict[str, Any]:
        """One full round now, in the calling thread; the renewal's result (the wipes' in
        ``last_wipes``)."""
        result: dict[str, Any] = self.run_full_round()["renewal"]
        return result

    def _round(self, *, renew: bool) -> dict[str, Any]:
        with self._round_lock:
            with psycopg.connect(self._database_url, connect_timeout=5) as conn:
                # Wipes first: a renewal that fails must not hold back a device's wipe.
                wipes = self._deliver_wipes(conn)
                result = None
                if renew:
                    result = renewal.run_round(conn, self._passphrase, self._publish)
            broker = self._sync_broker()
            self.rounds += 1
            if result is not None:
                self.last = result
                self.renewal_rounds += 1
        return {"wipes": wipes, "renewal": result, "broker": broker}

    def _deliver_wipes(self, conn: Conn) -> list[dict[str, Any]]:
        wipes = downlink.deliver_wipes(conn, self._publish, actor="downlink")
        self.last_wipes = wipes
        if self._broker_dir is not None and any(
                w["action"] == downlink.CLEARED and w["published"] for w in wipes):
            self._sync_pending = True
        return wipes

    def _sync_broker(self) -> dict[str, Any] | None:
        """Refresh the broker directory if a removed wipe calls for it; a failure is kept
        as ``{"error": why}`` and the refresh tried again next round."""
        if not self._sync_pending or self._broker_dir is None:
            return None
        try:
            result = refresh_broker(self._database_url, self._passphrase, self._broker_dir)
        except (psycopg.Error, OSError, ProvisioningError) as exc:
            log.warning("broker refresh of %s after a confirmed wipe failed (tried again"
                        " next round): %s", self._broker_dir, exc)
            self.last_broker = {"error": str(exc)}
        else:
            self._sync_pending = False
            log_credentials_round(result)
            self.last_broker = result
        return self.last_broker

    def _run(self) -> None:
        # A round before the broker connection is up would renew without delivering.
        self._connected.wait(_PUBLISH_TIMEOUT_S)
        next_renewal = time.monotonic()
        while not self._stop.is_set():
            renew = time.monotonic() >= next_renewal
            try:
                done = self._round(renew=renew)
            except (psycopg.Error, OSError, ProvisioningError) as exc:
                log.warning("downlink round failed: %s", exc)
            else:
                _log_round(done)
            finished = time.monotonic()
            if renew:
                next_renewal = finished + self._interval_s
            # Without a downlink interval of its own, wipes go out with the renewal rounds.
            next_downlink = (finished + self._downlink_interval_s if self._downlink_interval_s
                             else math.inf)
            self._stop.wait(max(0.0, min(next_renewal, next_downlink) - time.monotonic()))


def _log_round(done: dict[str, Any]) -> None:
    wipes, result = done["wipes"], done["renewal"]
    if wipes:
        log.info("wipe commands published or removed %d of %d",
                 sum(1 for w in wipes if w["published"]), len(wipes))
    if result is not None and any(result.values()):
        log.info("certificates renewed %d, refused %d, delivered %d",
                 len(result["renewed"]), len(result["refused"]),
                 sum(1 for d in result["delivered"] if d["published"]))
