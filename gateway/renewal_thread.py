"""The downlink on a schedule, beside the gateway: renewed certificates and wipe commands.

One round per interval (and one at start): ``provisioning.renewal.run_round`` renews every
certificate inside its policy's window for the key the device holds and publishes each
renewed certificate, retained with QoS 1, on the device's ``down/certificate`` topic; then
``provisioning.downlink.deliver_wipes`` publishes each pending wipe command, retained with
QoS 1, on the device's ``down/wipe`` topic and removes each confirmed one from the broker.
A failed round is logged and retried at the next interval; nothing is lost in between,
because a certificate or wipe not yet delivered stays pending in the registry.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt
import psycopg

from gateway.mqtt import new_client, parse_mqtt_url
from provisioning import downlink, renewal

log = logging.getLogger("aidlink.renewal")
_PUBLISH_TIMEOUT_S = 10.0


class RenewalLoop:
    """A started renewal schedule, stopped with ``stop()``; ``rounds`` counts finished ones."""

    def __init__(self, database_url: str, mqtt_url: str, passphrase: bytes, *,
                 interval_s: float, protocol: int = 5,
                 client_id: str = "aidlink-renewal") -> None:
        self._database_url = database_url
        self._passphrase = passphrase
        self._interval_s = interval_s
        self._target = parse_mqtt_url(mqtt_url)
        self._client: mqtt.Client = new_client(client_id, protocol=protocol)
        if self._target.username is not None:
            self._client.username_pw_set(self._target.username, self._target.password)
        self._connected = threading.Event()
        self._client.on_connect = lambda c, u, f, rc, p: (
            None if rc.is_failure else self._connected.set())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aidlink-renewal", daemon=True)
        self.rounds = 0
        self.last: dict[str, Any] | None = None
        # The wipe commands the last round published or removed (provisioning.downlink).
        self.last_wipes: list[dict[str, Any]] = []

    def start(self) -> None:
        """Connect to the broker (reconnecting on its own) and start the schedule."""
        self._client.connect_async(self._target.host, self._target.port, keepalive=30)
        self._client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        """End the schedule after the round in progress, and disconnect."""
        self._stop.set()
        self._thread.join(timeout=30)
        self._client.disconnect()
        self._client.loop_stop()

    def _publish(self, topic: str, payload: bytes) -> bool:
        if not self._client.is_connected():
            return False
        info = self._client.publish(topic, payload, qos=1, retain=True)
        try:
            info.wait_for_publish(_PUBLISH_TIMEOUT_S)
        except RuntimeError:  # the connection was lost before the PUBACK
            return False
        return info.is_published()

    def run_once(self) -> dict[str, Any]:
        """One round now, in the calling thread; the renewal's result (the wipes' in
        ``last_wipes``)."""
        with psycopg.connect(self._database_url, connect_timeout=5) as conn:
            # Wipes first: a renewal that fails must not hold back a device's wipe.
            self.last_wipes = downlink.deliver_wipes(conn, self._publish, actor="downlink")
            result = renewal.run_round(conn, self._passphrase, self._publish)
        self.last = result
        self.rounds += 1
        return result

    def _run(self) -> None:
        # A round before the broker connection is up would renew without delivering.
        self._connected.wait(_PUBLISH_TIMEOUT_S)
        while not self._stop.is_set():
            try:
                result = self.run_once()
            except (psycopg.Error, OSError) as exc:
                log.warning("downlink round failed: %s", exc)
            else:
                if any(result.values()) or self.last_wipes:
                    log.info("certificates renewed %d, refused %d, delivered %d;"
                             " wipe commands published or removed %d of %d",
                             len(result["renewed"]), len(result["refused"]),
                             sum(1 for d in result["delivered"] if d["published"]),
                             sum(1 for w in self.last_wipes if w["published"]),
                             len(self.last_wipes))
            self._stop.wait(self._interval_s)
