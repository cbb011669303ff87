"""How a writer lane takes its batch from its queue: in order, at most batch_max_rows, closed
right after an alarm, and making room for a network thread that waits to queue more."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from gateway.ingest.pipeline import Gateway, GatewayConfig
from gateway.ingest.plan import Incoming
from tests.support import wait_for


def _gateway(**options: int | float) -> Gateway:
    # Never started: nothing here connects to a broker or a database.
    return Gateway(GatewayConfig(database_url="postgresql://unused", mqtt_url="mqtt://unused",
                                 **options))  # type: ignore[arg-type]


def _message(index: int, channel: str = "ble/2a35") -> Incoming:
    return Incoming(topic=f"aidlink/v1/hub-1/cuff-1/{channel}", payload=bytes([index % 256]),
                    received_at=datetime.now(UTC), mid=index + 1)


def test_batches_keep_queue_order_and_the_row_limit() -> None:
    gateway = _gateway(batch_max_rows=500, receive_maximum=1000)
    lane = gateway._lanes[0]
    for index in range(1200):
        lane.queue.put(_message(index))
    sizes, mids = [], []
    while batch := gateway._collect(lane.queue):
        sizes.append(len(batch))
        mids += [m.mid for m in batch]
    assert sizes == [500, 500, 200]
    assert mids == list(range(1, 1201))


def test_an_alarm_closes_its_batch() -> None:
    gateway = _gateway(batch_max_rows=500)
    lane = gateway._lanes[0]
    for index in range(10):
        lane.queue.put(_message(index, "scaip" if index == 3 else "ble/2a35"))
    assert [m.mid for m in gateway._collect(lane.queue)] == [1, 2, 3, 4]
    assert [m.mid for m in gateway._collect(lane.queue)] == [5, 6, 7, 8, 9, 10]


def test_taking_a_batch_frees_every_network_thread_waiting_on_a_full_queue() -> None:
    gateway = _gateway(batch_max_rows=10, receive_maximum=5)
    lane = gateway._lanes[0]
    for index in range(10):  # the lane's queue holds twice the receive maximum
        lane.queue.put(_message(index))
    # Two puts wait for room. The batch's first message, taken with get, wakes one of them;
    # the batch is full before another get could wake the other.
    waiting = [threading.Thread(target=lambda i=i: lane.queue.put(_message(i), timeout=30))
               for i in (10, 11)]
    for thread in waiting:
        thread.start()
    wait_for(lambda: len(lane.queue.not_full._waiters) == 2 or None,  # type: ignore[attr-defined]
             what="both puts to wait on the full queue")
    first = gateway._collect(lane.queue)
    for thread in waiting:
        thread.join(5)
    assert not any(t.is_alive() for t in waiting), "a put still waits after the batch was taken"
    rest = gateway._collect(lane.queue)
    assert [m.mid for m in first] == list(range(1, 11))
    assert sorted(m.mid for m in rest) == [11, 12]
