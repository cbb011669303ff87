"""A gateway stopped mid-stream and started again is sent again only what it had not stored.

Its session outlives it, so the broker delivers again every message whose PUBACK it had not
taken when the connection closed. Messages stored and acknowledged just before the stop
would be stored once (writes are idempotent) but decoded and written twice; there should be
none of those after a graceful stop. (That the broker takes PUBACKs written just before a
DISCONNECT only once the client has waited for it is shown in tests/test_mqtt_client.py.)
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from gateway.services.mosquitto import MosquittoProcess
from simulators.bpm import BpReading, encode
from simulators.hub import Hub
from tests.support import count, running_gateway, seed, wait_for

_READINGS = 600


def _reading(at: datetime) -> bytes:
    return encode(BpReading(systolic=Decimal(128), diastolic=Decimal(82), mean=Decimal(97),
                            pulse=Decimal(64), measured_at=at, user_id=1, status=0))


def test_a_gateway_stopped_mid_stream_is_sent_again_only_what_it_had_not_stored(
        database_url: str, mosquitto: MosquittoProcess) -> None:
    fleet = seed(database_url)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    hub = Hub(mosquitto.url, fleet.hub)
    hub.connect()

    def publish() -> None:
        for second in range(_READINGS):
            hub.publish(fleet.cuff, "ble/2a35", _reading(start + timedelta(seconds=second)))

    sender = threading.Thread(target=publish)
    try:
        with running_gateway(database_url, mosquitto.url) as first:
            sender.start()
            wait_for(lambda: first.totals.stored_messages >= 100, timeout=30,
                     what="the first gateway to store 100 readings")
        sender.join(60)
        stored_first = first.totals.messages
        with running_gateway(database_url, mosquitto.url) as again:
            # One more reading, on the same lane: the broker sends what it delivers again
            # first, so once this one is stored and its batch settled, all of that is counted.
            hub.publish(fleet.cuff, "ble/2a35", _reading(start + timedelta(hours=2)))
            wait_for(lambda: count(database_url, "SELECT count(*) FROM observations")
                     == (_READINGS + 1) * 4, timeout=60, what="every reading stored")
            wait_for(lambda: again.health()["in_flight"] == 0 or None, timeout=30,
                     what="the restarted gateway's last batch to settle")
            received_again = again.totals.messages
    finally:
        hub.close()
    assert 100 <= stored_first < _READINGS, "the stop did not come mid-stream"
    repeated = received_again - (_READINGS + 1 - stored_first)
    assert repeated == 0, f"{repeated} messages stored before the stop were delivered again"
