"""Simulated devices: what each class sends decodes to what it should, physiology shows its
trends over a week, device state (clock, battery, firmware) shows on the wire, and the glucose
meter answers the gateway's fetch-records command over a real broker."""

from __future__ import annotations

import json
import re
import statistics
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import paho.mqtt.client as mqtt

from adapters.model import DecodeContext, Event, Observation, Record
from adapters.registry import decode
from gateway.services.mosquitto import MosquittoProcess
from simulators import scenario
from simulators.devices import (
    CLASSES,
    Dc09AlarmUnit,
    Device,
    GlucoseMeter,
    MobileAlarm,
    build,
)
from simulators.physiology import STOCKHOLM
from tests.test_scenario import Received, Subscriber, kinds, mqtt_total, text_scenario

START = datetime(2024, 5, 6, tzinfo=UTC)


def run_device(device: Device, hours: float, every: timedelta = timedelta(minutes=30),
               first: datetime = START) -> list[tuple[datetime, str, bytes]]:
    """Read a device every ``every`` for ``hours``: (virtual time, channel, payload)."""
    out = []
    at = first
    while at < first + timedelta(hours=hours):
        out += [(at, channel, payload) for channel, payload in device.readings(at)]
        at += every
    return out


def records(channel: str, payload: bytes) -> list[Record]:
    """Decode as the gateway would, in the device's zone."""
    return decode(channel, payload, DecodeContext(zone=STOCKHOLM))


# One simulated day per class: the channels sent and what they decode to.
ONE_DAY: dict[str, dict[str, set[str]]] = {
    "blood_pressure_monitor": {"ble/2a35": {"8480-6", "8462-4", "8478-0", "8867-4"}},
    "scale": {"ble/2a9d": {"29463-7", "39156-5", "8302-2"}},
    "body_composition_scale": {"ble/2a9c": {"41982-0", "29463-7", "scale.body_composition"},
                               "ble/2a9d": {"29463-7", "39156-5", "8302-2"}},
    "pulse_oximeter": {"ble/2a5e": {"2708-6", "8867-4"}},
    "pulse_oximeter_continuous": {"ble/2a5f": {"2708-6", "8867-4"}},
    "glucose_meter": {"ble/2a18": {"15074-8"}, "ble/2a34": {"glucose.context"}},
    "thermometer": {"ble/2a1c": {"8310-5"}},
    "spirometer": {"spirometer": {"20150-9", "19868-9", "19935-6"}},
    "peak_flow_meter": {"spirometer": {"19935-6"}},
    "medication_dispenser": {"dispenser": {
        "dispenser.dose_due", "dispenser.dose_dispensed", "dispenser.dose_taken",
        "dispenser.dose_late"}},
    "digital_lock": {"lock": {"lock.battery", "lock.unlocked", "lock.locked"}},
    "social_alarm": {"scaip": {"alarm.heartbeat"}},
    "mobile_alarm": {"scaip": {"alarm.heartbeat"}},
    "dc09_alarm": {"dc09": set()},  # NULL link tests carry no event
    "hub": {"status": {"device.status"}},
    # Issue 8 home tests (simulators/devices_home.py), read every 30 minutes here.
    "calprotectin_test": {"calprotectin": {"38445-3", "calprotectin.test_invalid"}},
    "tonometer": {"tonometer": {"79892-6", "79893-4"}},
    "urine_reader": {"urinalysis": {"25428-4", "20454-5", "5794-3", "5799-2", "5802-4",
                                    "2514-8", "5803-2", "5811-5"}},
    "night_supervision": {"night_supervision": {"night_supervision.check_done",
                                                "night_supervision.not_in_bed"}},
    "one_lead_ecg": {"ecg": {"11524-6", "8601-7", "8867-4"}},
}
HOME_TESTS = ("calprotectin_test", "tonometer", "urine_reader", "night_supervision",
              "one_lead_ecg")
BLE_EXTRAS = {"ble/2a19": {"device.battery"}, "ble/2a08": {"device.clock"},
              "status": {"device.status"}}


def test_every_class_sends_payloads_that_decode_to_its_records() -> None:
    for kind in CLASSES:
        device = build(kind, "00AB12" if kind == "dc09_alarm" else f"sim-{kind}",
                       start=START, seed=3)
        seen: dict[str, set[str]] = {}
        for _, channel, payload in run_device(device, 24):
            seen.setdefault(channel, set()).update(kinds(records(channel, payload)))
        expected = dict(ONE_DAY[kind])
        if kind.startswith(("blood", "scale", "body", "pulse", "glucose", "thermo")):
            expected |= BLE_EXTRAS
        elif kind in ("spirometer", "peak_flow_meter", "medication_dispenser", "digital_lock",
                      *HOME_TESTS):
            expected |= {"status": {"device.status"}}
        assert seen == expected, kind


def values(received: list[Received], device: str, code: str) -> list[tuple[datetime, Decimal]]:
    """(time, value) of each ``code`` observation from ``device`` (else the hub's time)."""
    out = []
    for message in received:
        if message.device == device:
            hub_time = datetime.fromisoformat(message.properties["received-at"])
            for record in records(message.channel, message.payload):
                if isinstance(record, Observation) and record.code == code:
                    assert record.value is not None
                    out.append((record.measured_at or hub_time, record.value))
    return out


def test_a_week_shows_the_trends_over_mqtt(mosquitto: MosquittoProcess) -> None:
    week = text_scenario("""
        name = "trends"
        seed = 4
        start = 2024-05-06T00:00:00Z
        duration = "7d"
        step = "10m"
        [people.p]
        systolic_per_day = 2.0
        weight_kg_per_day = 0.3
        night_dip = 6
        [[hubs]]
        client = "hub-1"
        [[hubs.devices]]
        id = "cuff"
        class = "blood_pressure_monitor"
        person = "p"
        times = ["07:30", "12:00", "16:00", "19:30"]
        [[hubs.devices]]
        id = "scale"
        class = "scale"
        person = "p"
        [[hubs.devices]]
        id = "oxi"
        class = "pulse_oximeter_continuous"
        person = "p"
    """)
    with Subscriber(mosquitto.url) as sub:
        report = scenario.run(week, mqtt_url=mosquitto.url)
        received = sub.wait_for(mqtt_total(report))
    systolic = values(received, "cuff", "8480-6")
    assert len(systolic) == 28
    days = [(at - START).total_seconds() / 86400 for at, _ in systolic]
    trend = statistics.linear_regression(days, [float(v) for _, v in systolic])
    assert trend.slope > 0.5  # 2 mmHg a day, under 6 mmHg of noise
    weight = [float(v) for _, v in values(received, "scale", "29463-7")]
    assert len(weight) == 7 and weight[-1] - weight[0] > 1.2  # about 1.8 kg
    spo2 = values(received, "oxi", "2708-6")
    small_hours = [float(v) for at, v in spo2 if 1 <= at.astimezone(STOCKHOLM).hour < 5]
    evening = [float(v) for at, v in spo2 if at.astimezone(STOCKHOLM).hour >= 22]
    assert statistics.mean(evening) - statistics.mean(small_hours) > 3


def test_glucose_meter_serves_fetch_records_over_mqtt(mosquitto: MosquittoProcess) -> None:
    day = text_scenario("""
        name = "replay"
        start = 2024-05-06T00:00:00Z
        duration = "22h"
        step = "10m"
        speed = 50000
        [[hubs]]
        client = "hub-1"
        [[hubs.devices]]
        id = "meter"
        class = "glucose_meter"
    """)
    asked: list[int] = []

    def ask_after_three(message: Received, client: mqtt.Client) -> None:
        # The gateway's request once it has seen three records: everything after record 1.
        if message.channel == "ble/2a18" and message.payload[1] == 3 and not asked:
            asked.append(1)
            body = json.dumps({"device": "meter", "channel": "ble/2a18", "after": 1})
            client.publish("aidlink/v1/hub-1/down/fetch-records", body.encode(), qos=1)

    with Subscriber(mosquitto.url, on_message=ask_after_three) as sub:
        report = scenario.run(day, mqtt_url=mosquitto.url)
        received = sub.wait_for(mqtt_total(report))
    assert len(report.replays) == 1
    served = report.replays[0].pop("served")
    assert report.replays == [{"hub": "hub-1", "device": "meter", "channel": "ble/2a18",
                               "after": 1}]
    records_seen = [m for m in received if m.channel == "ble/2a18"]
    first = {m.payload[1]: m.payload for m in reversed(records_seen)}
    start = next(i for i, m in enumerate(records_seen) if m.payload[1] == 2 and i > 2)
    replayed = records_seen[start:start + served]
    assert served >= 2 and [m.payload[1] for m in replayed] == list(range(2, 2 + served))
    assert [m.payload for m in replayed] == [first[n] for n in range(2, 2 + served)]
    # The hub stamps a replay with the moment it sent it, after the original's.
    assert replayed[0].properties["received-at"] > records_seen[1].properties["received-at"]


def test_glucose_memory_returns_records_after_a_sequence_with_their_context() -> None:
    meter = build("glucose_meter", "meter", start=START, seed=11)
    assert isinstance(meter, GlucoseMeter)
    sent = [(c, p) for _, c, p in run_device(meter, 12, timedelta(hours=1))
            if c in ("ble/2a18", "ble/2a34")]
    # Both characteristics carry the record's sequence number in bytes 1-2.
    assert meter.records_after(9) == [(c, p) for c, p in sent
                                      if int.from_bytes(p[1:3], "little") > 9]
    assert meter.records_after(12) == [] and meter.records_after(0) == sent


def first_records(device: Device, at: datetime) -> dict[str, Record]:
    """The first record decoded from each channel the device sends at ``at``."""
    return {channel: records(channel, payload)[0] for channel, payload
            in reversed(device.readings(at))}


def test_clock_skew_and_unset_clock_show_in_device_times() -> None:
    at = datetime(2024, 5, 6, 6, 0, tzinfo=UTC)
    for kind, channel in (("blood_pressure_monitor", "ble/2a35"), ("scale", "ble/2a9d"),
                          ("thermometer", "ble/2a1c"), ("glucose_meter", "ble/2a18")):
        device = build(kind, "d", start=START, seed=1)
        device.state.clock_offset = timedelta(minutes=-25)
        skewed = first_records(device, at)[channel]
        assert isinstance(skewed, Observation)
        assert skewed.measured_at == at - timedelta(minutes=25), kind
        device.state.lose_clock(at)
        unset = first_records(device, at + timedelta(days=1))
        measured = unset[channel]
        assert isinstance(measured, Observation) and measured.measured_at is None, kind
        assert unset["ble/2a08"] == Event("device.clock", None, {"device_time": None})
    oximeter = build("pulse_oximeter", "o", start=START, seed=1)
    oximeter.state.lose_clock(at)
    spot = first_records(oximeter, at + timedelta(hours=1))["ble/2a5e"]
    assert isinstance(spot, Observation)
    assert (spot.measured_at, "clock_not_set" in spot.flags) == (None, True)


def test_battery_drains_and_a_low_battery_is_reported() -> None:
    lock = build("digital_lock", "lock", start=START, seed=1)
    levels = [json.loads(p)["battery_percent"] for _, c, p in run_device(lock, 24 * 5)
              if c == "lock" and json.loads(p)["type"] == "battery"]
    assert levels == [100, 99, 98, 97, 96]  # reported at 06:00, from 02:00 on day one
    meter = build("glucose_meter", "meter", start=START, seed=1)
    meter.state.battery = 9
    sent = dict(meter.readings(START))
    assert records("ble/2a19", sent["ble/2a19"])[0] == Event("device.battery", None,
                                                             {"level": 9})
    glucose = records("ble/2a18", sent["ble/2a18"])[0]
    assert isinstance(glucose, Observation) and "device_battery_low" in glucose.flags
    assert "ble/2a19" in dict(meter.readings(START + timedelta(hours=2)))  # sent while low


def test_firmware_upgrade_shows_in_the_next_status() -> None:
    spirometer = build("spirometer", "spiro", start=START, seed=1)
    assert json.loads(dict(spirometer.readings(START))["status"])["firmware"] == "1.0.0"
    assert "status" not in dict(spirometer.readings(START + timedelta(hours=1)))
    spirometer.state.firmware = "2.0.0"
    status = dict(spirometer.readings(START + timedelta(hours=2)))["status"]
    event = records("status", status)[0]
    assert isinstance(event, Event) and event.data["firmware"] == "2.0.0"


def test_dispenser_works_through_its_schedule_for_three_weeks() -> None:
    dispenser = build("medication_dispenser", "disp", start=START, seed=3)
    events = [records(c, p)[0] for _, c, p in run_device(dispenser, 24 * 21,
                                                          timedelta(minutes=5))
              if c == "dispenser"]
    types = [e.type for e in events if isinstance(e, Event)]
    assert set(types) == {f"dispenser.{t}" for t in (
        "dose_due", "dose_dispensed", "dose_taken", "dose_late", "dose_missed", "supply_low",
        "supply_empty", "door_opened", "jam", "power_lost", "power_restored")}
    assert types.count("dispenser.dose_due") == 84  # four a day
    assert types.count("dispenser.dose_taken") + types.count("dispenser.dose_missed") == 84


def test_alarms_send_heartbeats_alarms_and_positions() -> None:
    mobile = build("mobile_alarm", "mob-1", start=START, seed=2)
    assert isinstance(mobile, MobileAlarm)
    mobile.fall_per_day = 5.0
    events = [records(c, p)[0] for _, c, p in run_device(mobile, 24, timedelta(hours=1))]
    assert {e.type for e in events if isinstance(e, Event)} == {"alarm.heartbeat",
                                                                 "alarm.fall"}
    positions = [e.data["location"] for e in events if isinstance(e, Event)]
    assert all(abs(p["lat"] - Decimal("60.6065")) < 1 and p["source"] == "geo"
               for p in positions)
    unit = build("dc09_alarm", "1A2B", start=START, seed=2)
    assert isinstance(unit, Dc09AlarmUnit)
    [(channel, frame)] = unit.readings(START)
    header = re.compile(rb'"[A-Z-]+"\d{4}')
    assert (channel, header.findall(frame)) == ("dc09", [b'"NULL"0001'])
    receiver_time = datetime.now(UTC) + timedelta(minutes=3)
    again = unit.resend(frame, receiver_time)  # a NAK carrying the receiver's clock
    assert header.findall(again) == [b'"NULL"0001'] and again != frame
    assert abs(unit.state.clock_offset - timedelta(minutes=3)) < timedelta(seconds=1)
