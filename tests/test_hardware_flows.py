"""Every device class end to end: the simulators' week through real Mosquitto, the gateway
and PostgreSQL, checked reading by reading against what the simulators say they delivered."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fhir.resources.bundle import Bundle

from adapters.model import DecodeContext, Event, Observation
from adapters.registry import decode
from gateway import db
from gateway.dc09_thread import Dc09Receiver
from gateway.ingest.device_time import correct, read_clock
from gateway.services.mosquitto import MosquittoProcess, find_mosquitto
from gateway.services.postgres import PostgresProcess
from provisioning import service
from simulators.devices import GlucoseMeter, build
from simulators.hub import Hub
from simulators.physiology import Person
from simulators.scenario import SCENARIOS, Report, run_file
from tests.conftest import missing_component
from tests.support import SECRET, api_client, bearer, running_gateway, wait_for

# Placeholder -> (class, firmware profile model, hub placeholder or None for its own client)
DEVICES = {
    "bpm": ("blood_pressure_monitor", "sim-bpm", "hub_astrid"),
    "scale": ("scale", "sim-scale", "hub_astrid"),
    "body_composition_scale": ("body_composition_scale", "sim-bodycomp", "hub_astrid"),
    "pulse_oximeter": ("pulse_oximeter", "sim-oximeter", "hub_astrid"),
    "pulse_oximeter_continuous": ("pulse_oximeter_continuous", "sim-oximeter", "hub_astrid"),
    "glucose_meter": ("glucose_meter", "sim-glucose", "hub_astrid"),
    "thermometer": ("thermometer", "sim-thermometer", "hub_astrid"),
    "calprotectin_test": ("calprotectin_test", "sim-calprotectin", "hub_astrid"),
    "tonometer": ("tonometer", "sim-tonometer", "hub_astrid"),
    "urine_reader": ("urine_reader", "sim-urine", "hub_astrid"),
    "one_lead_ecg": ("one_lead_ecg", "sim-ecg", "hub_astrid"),
    "spirometer": ("spirometer", "sim-spirometer", "hub_bertil"),
    "peak_flow_meter": ("peak_flow_meter", "sim-peakflow", "hub_bertil"),
    "medication_dispenser": ("medication_dispenser", "sim-dispenser", "hub_bertil"),
    "digital_lock": ("digital_lock", "sim-lock", "hub_bertil"),
    "night_supervision": ("night_supervision", "sim-night-supervision", "hub_bertil"),
    "social_alarm": ("social_alarm", "sim-social-alarm", None),
    "mobile_alarm": ("mobile_alarm", "sim-mobile-alarm", None),
    "dc09_unit": ("dc09_alarm", "sim-dc09-alarm", None),
}
HUBS = ("hub_astrid", "hub_bertil")
DC09_ACCOUNT = "7A11"
ZONE = ZoneInfo("Europe/Stockholm")
# What each class must produce in the store (LOINC codes of observations, event types).
PRODUCES = {
    "blood_pressure_monitor": {"8480-6", "8462-4", "8478-0", "8867-4"},
    "scale": {"29463-7"},
    "body_composition_scale": {"41982-0", "scale.body_composition"},
    "pulse_oximeter": {"2708-6", "8867-4"},
    "pulse_oximeter_continuous": {"2708-6", "8867-4"},
    "glucose_meter": {"15074-8", "glucose.context"},
    "thermometer": {"8310-5"},
    "spirometer": {"20150-9", "19868-9", "19935-6"},
    "peak_flow_meter": {"19935-6"},
    "medication_dispenser": {"dispenser.dose_due", "dispenser.dose_taken"},
    "digital_lock": {"lock.unlocked", "lock.locked"},
    "social_alarm": {"alarm.heartbeat", "alarm.button"},
    "mobile_alarm": {"alarm.heartbeat"},
    "dc09_alarm": {"alarm.personal_emergency"},
    "calprotectin_test": {"38445-3"},
    "tonometer": {"79892-6", "79893-4"},
    "urine_reader": {"25428-4", "5802-4", "5803-2", "5811-5"},
    # The waveform (one row per recording), the coded rhythm and the heart rate.
    "one_lead_ecg": {"11524-6", "8601-7", "8867-4"},
    "night_supervision": {"night_supervision.check_done", "night_supervision.check_missed"},
}


@dataclass
class Run:
    """One run of the every-class week and the store it left."""

    url: str
    ids: dict[str, str]
    report: Report
    stored: set[tuple[str, str, datetime]]
    dead_letters: int


@pytest.fixture(scope="module")
def week(pg_server: PostgresProcess) -> Iterator[Run]:
    if find_mosquitto() is None:
        missing_component("mosquitto not installed: apt-get install mosquitto")
    name = f"flows_{uuid.uuid4().hex[:12]}"
    url = pg_server.create_database(name)
    scratch = Path(tempfile.mkdtemp(prefix="aidlink-flows-"))
    broker = MosquittoProcess(data_dir=scratch / "mqtt")
    broker.start()
    try:
        ids = _register(url)
        with running_gateway(url, broker.url) as gateway:
            receiver = Dc09Receiver(gateway, url, host="127.0.0.1", port=0)
            receiver.start()
            try:
                report = run_file(SCENARIOS / "every-class.toml", mqtt_url=broker.url,
                                  dc09=("127.0.0.1", receiver.port), ids=ids)
                expected = _expected_keys(report)
                _wait_until_stored(url, expected)
            finally:
                receiver.stop()
        yield Run(url, ids, report, _stored_keys(url), _dead_letters(url))
    finally:
        broker.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        pg_server.drop_database(name)


def _register(url: str) -> dict[str, str]:
    db.migrate(url)
    ids: dict[str, str] = {"dc09_account": DC09_ACCOUNT}
    with psycopg.connect(url) as conn:
        service.add_principal(conn, "20", "Region Dalarna")
        for hub in HUBS:
            ids[hub] = service.onboard_device(conn, principal="20", model="sim-hub",
                                              serial=hub, actor="test")["device_id"]
        for placeholder, (_, model, hub_name) in DEVICES.items():
            account = DC09_ACCOUNT if placeholder == "dc09_unit" else None
            device = service.onboard_device(conn, principal="20", model=model,
                                            serial=placeholder, actor="test",
                                            alarm_account=account)
            ids[placeholder] = device["device_id"]
            if hub_name is not None:
                service.pair(conn, peripheral_id=device["device_id"], hub_id=ids[hub_name],
                             actor="test")
            service.assign(conn, SECRET, device_id=device["device_id"],
                           patient=f"patient-{placeholder.replace('_', '-')}", basis="HSL",
                           actor="test")
        # The simulated week lies in the past: the assignments must cover it.
        conn.execute("UPDATE assignments SET valid_from = '2024-01-01T00:00:00Z'")
    return ids


def _expected_keys(report: Report) -> set[tuple[str, str, datetime]]:
    """The natural keys the gateway should give the delivered readings, in delivery order:
    a device's Date Time report sets its clock offset, and later readings are corrected."""
    expected: set[tuple[str, str, datetime]] = set()
    offsets: dict[str, float] = {}
    for item in report.expected:
        if item["channel"] == "dc09":
            continue  # received over TCP: the gateway stamps those with its own clock
        device, received_at = item["device"], datetime.fromisoformat(item["received_at"])
        records = decode(item["channel"], bytes.fromhex(item["payload"]),
                         DecodeContext(zone=ZONE, received_at=received_at))
        for record in records:
            if isinstance(record, Event) and record.type == "device.clock":
                reading = read_clock(record, ZONE, received_at)
                if reading is not None:
                    offsets[device] = reading.offset_s
            if isinstance(record, Observation):
                corrected, _ = correct(record, offsets.get(device))
                expected.add((device, record.code, corrected.measured_at or received_at))
            elif record.occurred_at is not None:
                expected.add((device, record.type, record.occurred_at))
    return expected


def _stored_keys(url: str) -> set[tuple[str, str, datetime]]:
    with psycopg.connect(url) as conn:
        observations = conn.execute("SELECT device_id, code, ts FROM observations").fetchall()
        events = conn.execute("SELECT device_id, type, occurred_at FROM events"
                              " WHERE device_time").fetchall()
    return {(str(d), str(k), t) for d, k, t in observations + events}


def _dead_letters(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    return 0 if row is None else int(row[0])


def _wait_until_stored(url: str, expected: set[tuple[str, str, datetime]]) -> None:
    import time

    deadline = time.monotonic() + 60
    while not expected <= _stored_keys(url):
        if time.monotonic() > deadline:
            missing = sorted(expected - _stored_keys(url))[:5]
            raise AssertionError(f"{len(expected - _stored_keys(url))} readings never "
                                 f"arrived, e.g. {missing}")
        time.sleep(0.2)


def test_the_week_is_stored_whole_and_once(week: Run) -> None:
    expected = _expected_keys(week.report)
    timed_events = {k for k in week.stored if k[0] != week.ids["dc09_unit"]}
    assert timed_events == expected
    assert week.dead_letters == 0
    assert week.report.unanswered == []
    assert week.report.to_json()["spoiled"] == []


@pytest.mark.parametrize("placeholder", sorted(DEVICES))
def test_each_device_class_reaches_the_store(week: Run, placeholder: str) -> None:
    device = week.ids[placeholder]
    kind = DEVICES[placeholder][0]
    with psycopg.connect(week.url) as conn:
        codes = {r[0] for r in conn.execute(
            "SELECT code FROM observations WHERE device_id = %s", (device,))}
        types = {r[0] for r in conn.execute(
            "SELECT type FROM events WHERE device_id = %s", (device,))}
    assert PRODUCES[kind] <= codes | types, (kind, codes, types)


def test_every_scaip_alarm_was_answered_after_it_was_stored(week: Run) -> None:
    replies = week.report.replies
    assert replies, "the week had SCAIP alarms"
    assert {r["snu"] for r in replies} == {0}
    alarms = {week.ids["social_alarm"], week.ids["mobile_alarm"]}
    with psycopg.connect(week.url) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE channel = 'scaip'"
                           " AND device_id = ANY(%s)", (sorted(alarms),)).fetchone()
    assert row is not None
    assert row[0] == len(replies)


def test_dc09_frames_are_acknowledged_and_stored(week: Run) -> None:
    counts = week.report.dc09[DC09_ACCOUNT]
    acked = [bytes.fromhex(e["payload"]) for e in week.report.expected if e["channel"] == "dc09"]
    events = sum(len(decode("dc09", frame)) for frame in acked)
    with psycopg.connect(week.url) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE channel = 'dc09'").fetchone()
    assert counts["ACK"] == len(acked) > 0
    assert row == (events,)


def test_observation_classes_read_back_as_valid_fhir(week: Run) -> None:
    with api_client(week.url) as client:
        for placeholder in ("bpm", "scale", "pulse_oximeter", "glucose_meter", "thermometer",
                            "spirometer"):
            patient = f"patient-{placeholder.replace('_', '-')}"
            response = client.get("/fhir/r4/Observation", headers=bearer("20"),
                                  params={"subject": f"Patient/{patient}", "_count": 20})
            body: dict[str, Any] = response.json()
            bundle = Bundle.model_validate(body)
            assert bundle.entry, placeholder
            device = {e["resource"]["device"]["reference"] for e in body["entry"]}
            assert device == {f"Device/{week.ids[placeholder]}"}


def test_a_glucose_meter_replays_the_records_the_gateway_missed(
        database_url: str, mosquitto: MosquittoProcess) -> None:
    ids = _register(database_url)
    hub_id, meter_id = ids["hub_astrid"], ids["glucose_meter"]
    start = datetime(2024, 5, 6, 6, 0, tzinfo=ZONE)
    meter = build("glucose_meter", meter_id, start=start, seed=5,
                  person=Person(seed=5, start=start))
    assert isinstance(meter, GlucoseMeter)
    readings = [meter.measurements(start + timedelta(hours=n)) for n in range(6)]
    served: list[int] = []

    def on_command(command: str, payload: bytes) -> None:
        # The hub answers the gateway's request from the meter's memory (a BLE RACP fetch),
        # on a thread of its own so the MQTT thread is never blocked by a publish.
        if command != "fetch-records":
            return
        after = json.loads(payload)["after"]
        served.append(after)
        threading.Thread(target=_replay, args=(hub, meter, meter_id, after)).start()

    with running_gateway(database_url, mosquitto.url):
        hub = Hub(mosquitto.url, hub_id, on_command=on_command)
        hub.connect()
        try:
            # Records 4 and 5 never reach the hub when measured: the meter was out of range.
            for number, records in enumerate(readings, start=1):
                if number in (4, 5):
                    continue
                for channel, body in records:
                    hub.publish(meter_id, channel, body)
            wait_for(lambda: _sequences(database_url, meter_id) == [1, 2, 3, 4, 5, 6],
                     what="records 1-6 after the replay")
        finally:
            hub.close()
    assert served == [3]
    assert _sequences(database_url, meter_id) == [1, 2, 3, 4, 5, 6]


def _replay(hub: Hub, meter: GlucoseMeter, meter_id: str, after: int) -> None:
    for channel, body in meter.records_after(after):
        hub.publish(meter_id, channel, body)


def _sequences(url: str, device: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT sequence FROM observations WHERE device_id = %s ORDER BY sequence",
            (device,))]
