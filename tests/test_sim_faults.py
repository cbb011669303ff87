"""Fault injection: each fault does what it says, seeded and recorded, alone, composed, and
over a real broker in the shipped faults scenario."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event, Observation
from adapters.registry import decode
from gateway.services.mosquitto import MosquittoProcess
from simulators import scenario
from simulators.devices import build
from simulators.faults import (
    FAULTS,
    ClockSkew,
    Corrupt,
    Duplicate,
    Fault,
    FaultChain,
    FaultLog,
    FirmwareUpgrade,
    Late,
    LowBattery,
    Message,
    Offline,
    OutOfOrder,
    Truncate,
    UnsetClock,
    Window,
)
from simulators.physiology import STOCKHOLM
from simulators.scenario import SCENARIOS
from tests.test_scenario import Subscriber, dc09_receiver, ids_for, mqtt_total

START = datetime(2024, 5, 6, tzinfo=UTC)
HOUR = timedelta(hours=1)


def cuff_messages(count: int) -> list[Message]:
    """Hourly blood pressure readings from one simulated cuff."""
    cuff = build("blood_pressure_monitor", "cuff", start=START, seed=1)
    out = []
    for n in range(count):
        at = START + n * HOUR
        out += [Message("cuff", c, p, at) for c, p in cuff.readings(at) if c == "ble/2a35"]
    return out


def stream(faults: list[Fault], messages: list[Message]) -> tuple[list[Message], FaultLog]:
    """Feed each message at its own time, as the runner does; drain at the end."""
    log = FaultLog()
    chain = FaultChain(faults, log)
    out: list[Message] = []
    for message in messages:
        out += chain.release(message.at) + chain.push([message], message.at)
    return out + chain.drain(messages[-1].at + HOUR), log


def test_truncated_payloads_are_strict_prefixes_that_fail_to_decode() -> None:
    sent = cuff_messages(10)
    out, log = stream([Truncate(seed=1)], sent)
    assert [(m.clean, m.at) for m in out] == [(m.payload, m.at) for m in sent]
    for message in out:
        assert message.clean is not None and message.clean.startswith(message.payload)
        assert len(message.payload) < len(message.clean)
        with pytest.raises(DecodeError):
            decode(message.channel, message.payload)
    assert log.counts == Counter({"truncate": 10})
    assert log.entries[0] == {"fault": "truncate", "device": "cuff", "at": "2024-05-06T00:00:00Z",
                              "channel": "ble/2a35", "length": len(sent[0].payload),
                              "kept": len(out[0].payload)}


def test_corruption_flips_exactly_the_recorded_bits() -> None:
    out, log = stream([Corrupt(seed=2, bits=3)], cuff_messages(5))
    for message, entry in zip(out, log.entries, strict=True):
        assert message.clean is not None
        diff = int.from_bytes(message.payload, "little") ^ int.from_bytes(message.clean, "little")
        assert diff == sum(1 << bit for bit in entry["bits"]) and len(entry["bits"]) == 3


def test_duplicates_are_byte_identical_and_consecutive() -> None:
    sent = cuff_messages(4)
    out, log = stream([Duplicate(seed=3, copies=2)], sent)
    assert out == [m for m in sent for _ in range(3)]
    assert log.counts == Counter({"duplicate": 4})


def test_out_of_order_releases_a_message_after_the_next_one() -> None:
    sent = cuff_messages(4)
    # Only the second reading is in the window, so only it is held back.
    window = Window(START + HOUR, START + 2 * HOUR)
    out, log = stream([OutOfOrder(seed=4, window=window)], sent)
    assert out == [sent[0], sent[2], sent[1], sent[3]]
    assert [e["fault"] for e in log.entries] == ["out_of_order"]


def test_late_delivery_holds_for_the_delay() -> None:
    sent = cuff_messages(6)
    out, _ = stream([Late(seed=5, delay=3 * HOUR, window=Window(START, START + HOUR))], sent)
    assert out == [sent[1], sent[2], sent[0], sent[3], sent[4], sent[5]]


def test_offline_holds_everything_then_bursts_before_new_values() -> None:
    sent = cuff_messages(8)
    offline = Offline(seed=6, window=Window(START + 2 * HOUR, START + 5 * HOUR))
    log = FaultLog()
    chain = FaultChain([offline], log)
    delivered = {}
    for message in sent:
        delivered[message.at] = chain.release(message.at) + chain.push([message], message.at)
    assert [len(delivered[START + n * HOUR]) for n in range(8)] == [1, 1, 0, 0, 0, 4, 1, 1]
    assert delivered[START + 5 * HOUR] == sent[2:6]
    assert log.entries == [{"fault": "offline", "device": "cuff", "at": "2024-05-06T02:00:00Z",
                            "held": 3, "burst_at": "2024-05-06T05:00:00Z",
                            "devices": ["cuff"]}]


def test_faults_compose_and_replay_from_their_seeds() -> None:
    def run(seed: int) -> tuple[list[Message], list[dict[str, object]]]:
        out, log = stream([Duplicate(seed=seed, probability=0.5),
                           Truncate(seed=seed + 1, probability=0.3),
                           OutOfOrder(seed=seed + 2, probability=0.3)], cuff_messages(30))
        return out, log.entries

    first, again, other = run(7), run(7), run(8)
    assert first == again and first != other
    out, entries = first
    kinds = Counter(str(e["fault"]) for e in entries)
    assert set(kinds) == {"duplicate", "truncate", "out_of_order"}
    assert len(out) == 30 + kinds["duplicate"]  # nothing lost, copies added
    assert sum(m.clean is not None for m in out) == kinds["truncate"]


def test_device_faults_change_state_inside_their_window_only() -> None:
    meter = build("glucose_meter", "meter", start=START, seed=1)
    log = FaultLog()
    window = Window(START + HOUR, START + 3 * HOUR)
    chain = FaultChain([ClockSkew(seed=1, offset=timedelta(minutes=7), window=window),
                        LowBattery(seed=2, level=6, window=window),
                        FirmwareUpgrade(seed=3, version="2.0.0", window=Window(START + HOUR))],
                       log)
    states = []
    for n in range(4):
        chain.prepare(meter, START + n * HOUR)
        state = meter.state
        states.append((state.clock_offset, state.battery_percent, state.firmware))
    minutes7 = timedelta(minutes=7)
    assert states == [(timedelta(0), 100, "1.0.0"), (minutes7, 6, "2.0.0"),
                      (minutes7, 6, "2.0.0"), (timedelta(0), 100, "2.0.0")]
    assert log.entries == [
        {"fault": "clock_skew", "device": "meter", "at": "2024-05-06T01:00:00Z", "offset_s": 420},
        {"fault": "low_battery", "device": "meter", "at": "2024-05-06T01:00:00Z", "level": 6},
        {"fault": "firmware_upgrade", "device": "meter", "at": "2024-05-06T01:00:00Z",
         "from": "1.0.0", "to": "2.0.0"},
        {"fault": "clock_skew", "device": "meter", "at": "2024-05-06T03:00:00Z", "ended": True,
         "offset_s": 0},
        {"fault": "low_battery", "device": "meter", "at": "2024-05-06T03:00:00Z", "ended": True,
         "level": 100},
    ]
    unset = FaultChain([UnsetClock(seed=4, window=Window(START))], log)
    unset.prepare(meter, START + 4 * HOUR)
    record = dict(meter.readings(START + 5 * HOUR))["ble/2a18"]
    glucose = decode("ble/2a18", record)[0]
    assert isinstance(glucose, Observation) and glucose.measured_at is None


def test_every_fault_mode_over_a_real_broker(mosquitto: MosquittoProcess) -> None:
    path = SCENARIOS / "faults.toml"
    with dc09_receiver() as (port, _), Subscriber(mosquitto.url, answer_scaip=lambda _: 0) as sub:
        report = scenario.run_file(path, mqtt_url=mosquitto.url, dc09=("127.0.0.1", port),
                                   ids=ids_for(path))
        received = sub.wait_for(mqtt_total(report))
    assert set(report.fault_counts) == set(FAULTS)
    json.dumps(report.to_json())

    # Truncated payloads arrive as sent and fail to decode; corrupt ones are recorded.
    spoiled = {bytes.fromhex(s["payload"]): s for s in report.spoiled}
    arrived = [m for m in received if m.payload in spoiled]
    assert len(arrived) == len(report.spoiled)  # one spoiled reading was also duplicated
    assert len(spoiled) == report.fault_counts["truncate"] + report.fault_counts["corrupt"]
    for message in arrived:
        truncated = bytes.fromhex(spoiled[message.payload]["clean"]).startswith(message.payload)
        if truncated:
            with pytest.raises(DecodeError):
                decode(message.channel, message.payload)

    # Duplicates: the same bytes twice in a row, once per duplicate injected.
    keys = [(m.device, m.channel, m.payload) for m in received]
    assert sum(a == b for a, b in itertools.pairwise(keys)) == \
        report.fault_counts["duplicate"]

    # Out of order: every glucose record arrives, not in sequence order.
    numbers = [int.from_bytes(m.payload[1:3], "little") for m in received
               if m.channel == "ble/2a18"]
    assert sorted(set(numbers)) == list(range(1, max(numbers) + 1)) and numbers != sorted(numbers)

    # Offline: nothing from the hub's devices while offline, then one burst at its end.
    offline = next(e for e in report.faults if e["fault"] == "offline")
    assert (offline["device"], offline["at"]) == ("hub", "2024-05-06T20:00:00Z")
    hub_times = Counter(m.properties["received-at"] for m in received if m.client == "hub")
    assert not [t for t in hub_times if "2024-05-06T20:00:00Z" <= t < "2024-05-07T02:00:00Z"]
    assert hub_times["2024-05-07T02:00:00Z"] >= offline["held"] > 1

    # Late: a spot check delivered three hours after it was measured.
    ctx = DecodeContext(zone=STOCKHOLM)
    delays = []
    for message in received:
        if message.channel == "ble/2a5e":
            spot = decode(message.channel, message.payload, ctx)[0]
            if isinstance(spot, Observation) and spot.measured_at is not None:
                got = datetime.fromisoformat(message.properties["received-at"])
                delays.append(got - spot.measured_at)
    assert max(delays) >= timedelta(hours=3)

    # Unset clock: the oximeter says so; the meter sends the unknown date.
    flags = {f for m in received if m.channel == "ble/2a5e"
             for r in decode(m.channel, m.payload, ctx) if isinstance(r, Observation)
             for f in r.flags}
    assert "clock_not_set" in flags
    assert any(r.measured_at is None for m in received if m.channel == "ble/2a18"
               for r in decode(m.channel, m.payload, ctx) if isinstance(r, Observation))

    # Low battery, firmware upgrade and the DC-09 unit's skewed clock (NAK, then ACK).
    events = [r for m in received if m.channel in ("lock", "scaip", "status")
              and (m.payload not in spoiled)
              for r in decode(m.channel, m.payload, ctx) if isinstance(r, Event)]
    lock_levels = [e.data["battery_percent"] for e in events if e.type == "lock.battery"]
    assert lock_levels == [20, 4]  # drained to 5 % at 12 h, reported the next morning
    assert "device.battery_low" in {e.type for e in events}
    assert "2.0.0" in {e.data.get("firmware") for e in events if e.type == "device.status"}
    assert report.dc09["1234"]["NAK"] >= 1 and "failed" not in report.dc09["1234"]

