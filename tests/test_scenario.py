"""Scenario files: loading and refusing them, running them against a real Mosquitto.

Also home of the helpers the simulator tests share: a plain paho subscriber that records what
the simulators publish (and can answer SCAIP requests as the gateway would), and a DC-09
receiver (the gateway's own ``Dc09Server`` with a storage seam that always commits).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from adapters import scaip
from adapters.errors import DecodeError
from adapters.model import Observation, Record
from adapters.registry import decode
from gateway.dc09_server import Dc09Server
from gateway.mqtt import parse_mqtt_url
from gateway.services.mosquitto import MosquittoProcess
from simulators import scenario
from simulators.devices import CLASSES
from simulators.faults import FAULTS
from simulators.scenario import SCENARIOS, ScenarioError

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.-]+)(?::-[^}]*)?\}")
MAX_MESSAGES = 20_000  # far above any test scenario; a runaway simulator fails instead of hanging


@dataclass(frozen=True, slots=True)
class Received:
    """One up message as a subscriber saw it."""

    client: str
    device: str
    channel: str
    payload: bytes
    properties: dict[str, str]


class Subscriber:
    """A plain MQTT 5 client recording every up message; optionally answers SCAIP requests."""

    def __init__(self, url: str, *, answer_scaip: Callable[[bytes], int | None] | None = None,
                 on_message: Callable[[Received, mqtt.Client], None] | None = None) -> None:
        self._target = parse_mqtt_url(url)
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-subscriber",
                                   protocol=mqtt.MQTTv5)
        self._client.on_message = self._message
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._answer, self._hook = answer_scaip, on_message
        self._lock = threading.Lock()
        self.messages: list[Received] = []

    def __enter__(self) -> Subscriber:
        self._client.connect(self._target.host, self._target.port)
        self._client.loop_start()
        self._client.subscribe("aidlink/v1/+/+/#", qos=1)
        assert self._subscribed.wait(5), "the test subscriber got no SUBACK"
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        _, _, hub, device, channel = message.topic.split("/", 4)
        if device == "down":
            return
        props = getattr(message.properties, "UserProperty", None) or []
        received = Received(hub, device, channel, bytes(message.payload), dict(props))
        with self._lock:
            assert len(self.messages) < MAX_MESSAGES
            self.messages.append(received)
        if channel == "scaip" and self._answer is not None:
            try:
                scaip.request_ref(received.payload)
            except DecodeError:
                pass  # no readable ref: the gateway cannot answer either
            else:
                snu = self._answer(received.payload)
                if snu is not None:
                    client.publish(f"aidlink/v1/{hub}/down/scaip",
                                   scaip.reply(received.payload, snu), qos=1)
        if self._hook is not None:
            self._hook(received, client)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` messages have arrived; all of them, in order."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} messages, got {len(self.messages)}")


def mqtt_total(report: scenario.Report) -> int:
    """Messages the report says went over MQTT (DC-09 frames go over TCP)."""
    return sum(n for channels in report.published.values()
               for channel, n in channels.items() if channel != "dc09")


def ids_for(path: Path, account: str = "1234") -> dict[str, str]:
    """Every placeholder in a file mapped to its own name (DC-09 accounts to hex)."""
    names = set(_PLACEHOLDER.findall(path.read_text()))
    return {name: account if "account" in name else name for name in names}


@contextmanager
def dc09_receiver() -> Iterator[tuple[int, list[bytes]]]:
    """The gateway's DC-09 receiver on a free port, committing every frame; (port, frames)."""
    frames: list[bytes] = []

    def submit(client_id: str, frame: bytes) -> concurrent.futures.Future[bool]:
        frames.append(frame)
        done: concurrent.futures.Future[bool] = concurrent.futures.Future()
        done.set_result(True)
        return done

    loop = asyncio.new_event_loop()
    server = Dc09Server("127.0.0.1", 0, account_client=lambda account: "unit", submit=submit)
    thread = threading.Thread(target=loop.run_forever, name="dc09-receiver")
    thread.start()
    try:
        port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(5)
        yield port, frames
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def kinds(records: list[Record]) -> set[str]:
    """Each record's LOINC code (observation) or type (event)."""
    return {r.code if isinstance(r, Observation) else r.type for r in records}


def text_scenario(text: str, source: str = "test.toml") -> scenario.Scenario:
    """A scenario from TOML text."""
    return scenario.parse(tomllib.loads(text), source=source)


def test_shipped_scenarios_cover_every_class_and_every_fault() -> None:
    every = scenario.load(SCENARIOS / "every-class.toml")
    classes = {d.class_ for hub in every.hubs for d in hub.devices}
    classes |= {a.class_ for a in every.scaip} | {u.class_ for u in every.dc09} | {"hub"}
    assert classes == set(CLASSES)
    faults = scenario.load(SCENARIOS / "faults.toml")
    specs = [f for hub in faults.hubs for f in hub.faults]
    specs += [f for hub in faults.hubs for d in hub.devices for f in d.faults]
    specs += [f for unit in [*faults.scaip, *faults.dc09] for f in unit.faults]
    assert {f.kind for f in specs} == set(FAULTS)


BAD = [
    ('name = "x"\nstart = 2024-05-06T00:00:00Z\n', "bad.toml: duration: Field required"),
    ('name = "x"\nstart = 2024-05-06T00:00:00\nduration = "1d"\n',
     "bad.toml: start: start needs a UTC offset, e.g. 2024-05-06T00:00:00Z"),
    ('name = "x"\nstart = 2024-05-06T00:00:00Z\nduration = "a week"\n',
     "bad.toml: duration: expected a duration such as \"7d\", \"1h30m\" or seconds, "
     "got 'a week'"),
    ('name = "x"\nstart = 2024-05-06T00:00:00Z\nduration = "1d"\n[[hubs]]\nclient = "h"\n'
     '[[hubs.devices]]\nid = "d"\nclass = "bpm"\n',
     "bad.toml: hubs.0.devices.0.class: unknown device class 'bpm'; known: "
     + ", ".join(CLASSES)),
    ('name = "x"\nstart = 2024-05-06T00:00:00Z\nduration = "1d"\n[[hubs]]\nclient = "h"\n'
     '[[hubs.devices]]\nid = "d"\nclass = "scale"\n'
     'faults = [{kind = "duplicate", probability = 1.5}]\n',
     "bad.toml: hubs.0.devices.0.faults.0.probability: Input should be less than or equal to 1"),
    ('name = "x"\nstart = 2024-05-06T00:00:00Z\nduration = "1d"\n[[hubs]]\nclient = "h"\n'
     'faults = [{kind = "offline", duration = "1h"}]\n',
     "bad.toml: hubs.0.faults.0: fault offline needs start (when it begins)"),
    ('name = "x"\nstart = 2024-05-06T00:00:00Z\nduration = "1d"\n[[hubs]]\nclient = "h"\n'
     'colour = "red"\n', "bad.toml: hubs.0.colour: Extra inputs are not permitted"),
    ('name = "x"\nstart = 2024-05-06T00:00:00Z\nduration = "1d"\n[[dc09]]\naccount = "XYZ"\n',
     "bad.toml: dc09.0.account: account 'XYZ' must be 1-16 hex digits or a ${name}"),
    ('name = "x"\nstart = 2024-05-06T00:00:00Z\nduration = "1d"\n[[scaip]]\nclient = "a"\n'
     'person = "nobody"\n', "bad.toml: scaip.0.person: 'nobody' is not in [people]"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_files_are_refused_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as caught:
        scenario.load(path)
    assert str(caught.value) == message.replace("bad.toml", str(path))


def test_unreadable_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"missing\.toml: cannot read"):
        scenario.load(tmp_path / "missing.toml")
    (tmp_path / "broken.toml").write_text("name = \n")
    with pytest.raises(ScenarioError, match=r"broken\.toml: not valid TOML: Invalid value"):
        scenario.load(tmp_path / "broken.toml")


def test_placeholders_resolve_and_missing_ids_are_named() -> None:
    loaded = scenario.load(SCENARIOS / "faults.toml")
    ids = ids_for(SCENARIOS / "faults.toml") | {"bpm": "dev-42"}
    resolved = scenario.resolve(loaded, ids)
    assert [d.id for d in resolved.hubs[0].devices][:2] == ["dev-42", "glucose_meter"]
    assert resolved.dc09[0].account == "1234"
    assert scenario.resolve(loaded, None).dc09[0].account == "1234"  # its default
    with pytest.raises(ScenarioError) as caught:
        scenario.resolve(loaded, {"hub": "h"})
    assert str(caught.value) == (
        "scenario faults: no id given for ${bpm}, ${digital_lock}, "
        "${glucose_meter}, ${medication_dispenser}, ${pulse_oximeter}, ${scale}, "
        "${social_alarm}")


# What each class's payloads decode to over a week (LOINC codes and event types).
EVERY_CLASS_RECORDS = {
    "bpm": {"8480-6", "8462-4", "8478-0", "8867-4", "device.battery", "device.clock",
            "device.status"},
    "scale": {"29463-7", "39156-5", "8302-2", "device.battery", "device.clock",
              "device.status"},
    "body_composition_scale": {"41982-0", "29463-7", "scale.body_composition", "39156-5",
                               "8302-2", "device.battery", "device.clock", "device.status"},
    "pulse_oximeter": {"2708-6", "8867-4", "device.battery", "device.clock", "device.status"},
    "pulse_oximeter_continuous": {"2708-6", "8867-4", "device.battery", "device.clock",
                                  "device.status"},
    "glucose_meter": {"15074-8", "glucose.context", "device.battery", "device.clock",
                      "device.status"},
    "thermometer": {"8310-5", "device.battery", "device.clock", "device.status"},
    "spirometer": {"20150-9", "19868-9", "19935-6", "device.status"},
    "peak_flow_meter": {"19935-6", "device.status"},
    "medication_dispenser": {"device.status", "dispenser.dose_due", "dispenser.dose_dispensed",
                             "dispenser.dose_taken", "dispenser.dose_late",
                             "dispenser.dose_missed", "dispenser.power_lost",
                             "dispenser.power_restored"},
    "digital_lock": {"device.status", "lock.battery", "lock.unlocked", "lock.locked",
                     "lock.failed_attempt"},
    "social_alarm": {"alarm.heartbeat", "alarm.button", "alarm.fall"},
    "mobile_alarm": {"alarm.heartbeat", "alarm.button"},
    "calprotectin_test": {"38445-3", "device.status"},
    "tonometer": {"79892-6", "79893-4", "device.status"},
    "urine_reader": {"25428-4", "20454-5", "5794-3", "5799-2", "5802-4", "2514-8", "5803-2",
                     "5811-5", "device.status"},
    "one_lead_ecg": {"11524-6", "8601-7", "8867-4", "device.status"},
    "night_supervision": {"night_supervision.check_done", "night_supervision.not_in_bed",
                          "night_supervision.check_missed", "night_supervision.camera_offline",
                          "night_supervision.camera_online", "device.status"},
    "hub_astrid": {"device.status"},
    "hub_bertil": {"device.status"},
    "1234": {"alarm.personal_emergency"},
}


def test_every_class_runs_a_week_and_decodes(mosquitto: MosquittoProcess) -> None:
    path = SCENARIOS / "every-class.toml"
    with dc09_receiver() as (port, frames), Subscriber(mosquitto.url,
                                                       answer_scaip=lambda _: 0) as sub:
        report = scenario.run_file(path, mqtt_url=mosquitto.url, dc09=("127.0.0.1", port),
                                   ids=ids_for(path))
        received = sub.wait_for(mqtt_total(report))
    seen: dict[str, set[str]] = {}
    for message in received:
        seen.setdefault(message.device, set()).update(
            kinds(decode(message.channel, message.payload)))
    for frame in frames:
        seen.setdefault("1234", set()).update(kinds(decode("dc09", frame)))
    assert seen == EVERY_CLASS_RECORDS
    counts = Counter((m.device, m.channel) for m in received)
    assert counts == Counter({(d, c): n for d, chans in report.published.items()
                              for c, n in chans.items() if c != "dc09"})
    assert report.fault_counts == {"duplicate": 5, "out_of_order": 4, "clock_skew": 2,
                                   "offline": 1, "late": 3, "firmware_upgrade": 1,
                                   "low_battery": 1}
    # Every frame is ACKed at the first attempt; the receiver stores all but the link tests.
    assert report.dc09 == {"1234": {"ACK": report.published["1234"]["dc09"]}}
    delivered = [bytes.fromhex(e["payload"]) for e in report.expected if e["channel"] == "dc09"]
    assert frames == [frame for frame in delivered if b'"NULL"' not in frame]
    assert report.unanswered == [] and report.spoiled == []
    assert {r["snu"] for r in report.replies} == {0}
    # One expected reading per distinct payload and hub receipt time (duplicates share both).
    assert len(report.expected) == len(
        {(m.device, m.channel, m.payload, m.properties["received-at"]) for m in received}
    ) + len(delivered)
    assert all(m.properties.keys() == {"received-at", "seq"} for m in received)
    json.dumps(report.to_json())


def test_scaip_replies_are_awaited_with_latency_and_snu(mosquitto: MosquittoProcess) -> None:
    answered: list[str] = []

    def answer(payload: bytes) -> int:
        answered.append(scaip.request_ref(payload))
        return 5 if len(answered) == 1 else 0  # the first one "not treated"

    day = text_scenario('name = "alarm"\nstart = 2024-05-06T00:00:00Z\nduration = "6h"\n'
                        'reply_timeout = 5\n[[scaip]]\nclient = "alarm-1"\n')
    with Subscriber(mosquitto.url, answer_scaip=answer) as sub:
        report = scenario.run(day, mqtt_url=mosquitto.url)
        sub.wait_for(6)
    assert [(r["device"], r["ref"], r["snu"]) for r in report.replies] == [
        ("alarm-1", ref, 5 if index == 0 else 0) for index, ref in enumerate(answered)]
    assert len(answered) == 6 and report.unanswered == []
    assert all(0 <= r["latency_ms"] < 5000 for r in report.replies)


def test_unanswered_scaip_requests_are_reported(mosquitto: MosquittoProcess) -> None:
    hour = text_scenario('name = "alarm"\nstart = 2024-05-06T00:00:00Z\nduration = "1h"\n'
                         'reply_timeout = 0.2\n[[scaip]]\nclient = "alarm-1"\n')
    report = scenario.run(hour, mqtt_url=mosquitto.url)
    assert [entry["device"] for entry in report.unanswered] == ["alarm-1"]
    assert report.replies == []


def test_a_set_stop_event_ends_the_run_at_once(mosquitto: MosquittoProcess) -> None:
    stop = threading.Event()
    stop.set()
    report = scenario.run(scenario.load(SCENARIOS / "every-class.toml"),
                          mqtt_url=mosquitto.url, stop=stop,
                          ids=ids_for(SCENARIOS / "every-class.toml"))
    assert report.stopped and report.published == {} and report.expected == []


def test_speed_paces_virtual_time(mosquitto: MosquittoProcess) -> None:
    paced = text_scenario('name = "paced"\nstart = 2024-05-06T00:00:00Z\nduration = "2h"\n'
                          'step = "10m"\nspeed = 9000\n[[hubs]]\nclient = "hub-1"\n')
    began = time.monotonic()
    report = scenario.run(paced, mqtt_url=mosquitto.url)
    assert time.monotonic() - began >= 0.75  # 2 h at 9000x is 0.8 s
    assert report.published == {"hub-1": {"status": 1}}


def test_mqtt_3_1_1_hubs_publish_without_user_properties(mosquitto: MosquittoProcess) -> None:
    hour = text_scenario('name = "v4"\nstart = 2024-05-06T00:00:00Z\nduration = "1h"\n'
                         '[[hubs]]\nclient = "hub-1"\n')
    with Subscriber(mosquitto.url) as sub:
        report = scenario.run(hour, mqtt_url=mosquitto.url, protocol=4)
        [message] = sub.wait_for(1)
    assert report.published == {"hub-1": {"status": 1}}
    assert (message.client, message.device, message.channel, message.properties) == (
        "hub-1", "hub-1", "status", {})
