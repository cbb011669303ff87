"""The demo's every-class fleet: one device of every class, and a simulated past week.

On the first ``aidlink up --demo`` the devices of ``simulators/scenarios/every-class.toml``
are onboarded for Region Dalarna, paired and assigned to demo patients, and the scenario's
week is replayed, ending now, through the running broker, DC-09 receiver and gateway, so a
clinician's system finds a week of every kind of reading at once.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

import psycopg

from provisioning import service
from simulators.scenario import SCENARIOS, ScenarioError, load, run

log = logging.getLogger(__name__)

PRINCIPAL = "20"
ACCOUNT = "7A11"
ACTOR = "demo"
# Placeholder -> (firmware profile model, hub placeholder or None for a device of its own).
DEVICES = {
    "bpm": ("sim-bpm", "hub_astrid"),
    "scale": ("sim-scale", "hub_astrid"),
    "body_composition_scale": ("sim-bodycomp", "hub_astrid"),
    "pulse_oximeter": ("sim-oximeter", "hub_astrid"),
    "pulse_oximeter_continuous": ("sim-oximeter", "hub_astrid"),
    "glucose_meter": ("sim-glucose", "hub_astrid"),
    "thermometer": ("sim-thermometer", "hub_astrid"),
    "calprotectin_test": ("sim-calprotectin", "hub_astrid"),
    "tonometer": ("sim-tonometer", "hub_astrid"),
    "urine_reader": ("sim-urine", "hub_astrid"),
    "one_lead_ecg": ("sim-ecg", "hub_astrid"),
    "spirometer": ("sim-spirometer", "hub_bertil"),
    "peak_flow_meter": ("sim-peakflow", "hub_bertil"),
    "medication_dispenser": ("sim-dispenser", "hub_bertil"),
    "digital_lock": ("sim-lock", "hub_bertil"),
    "night_supervision": ("sim-night-supervision", "hub_bertil"),
    "social_alarm": ("sim-social-alarm", None),
    "mobile_alarm": ("sim-mobile-alarm", None),
    "dc09_unit": ("sim-dc09-alarm", None),
}
# Astrid has the cardiometabolic devices, Bertil the respiratory ones (as in the scenario).
PATIENTS = {"hub_astrid": "demo-astrid", "hub_bertil": "demo-bertil"}


def register(conn: psycopg.Connection[Any], secret: bytes) -> dict[str, str]:
    """Onboard, pair and assign the every-class fleet; return placeholder -> device id."""
    ids: dict[str, str] = {"dc09_account": ACCOUNT}
    for hub in PATIENTS:
        ids[hub] = service.onboard_device(conn, principal=PRINCIPAL, model="sim-hub",
                                          serial=f"{hub}-{_stamp()}", actor=ACTOR)["device_id"]
    for placeholder, (model, hub_name) in DEVICES.items():
        device = service.onboard_device(
            conn, principal=PRINCIPAL, model=model, serial=f"{placeholder}-{_stamp()}",
            actor=ACTOR, alarm_account=ACCOUNT if placeholder == "dc09_unit" else None)
        ids[placeholder] = device["device_id"]
        if hub_name is not None:
            service.pair(conn, peripheral_id=device["device_id"], hub_id=ids[hub_name],
                         actor=ACTOR)
            patient = PATIENTS[hub_name]
        else:
            patient = f"demo-{placeholder.replace('_', '-')}"
        service.assign(conn, secret, device_id=device["device_id"], patient=patient,
                       basis="HSL", actor=ACTOR)
    # The week replayed below lies in the past; the assignments cover it.
    conn.execute("UPDATE assignments SET valid_from = now() - interval '8 days'"
                 " WHERE device_id = ANY(%s)", ([v for k, v in ids.items() if k in DEVICES],))
    conn.commit()
    return ids


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")


def replay_week(ids: dict[str, str], mqtt_url: str, protocol: int,
                dc09: tuple[str, int] | None) -> threading.Thread:
    """Replay the every-class week, ending now, in the background."""
    def work() -> None:
        try:
            scenario = load(SCENARIOS / "every-class.toml")
            start = (datetime.now(UTC) - scenario.duration).replace(second=0, microsecond=0)
            report = run(scenario.model_copy(update={"start": start}), mqtt_url=mqtt_url,
                         protocol=protocol, dc09=dc09, ids=ids)
        except (ScenarioError, OSError) as exc:
            log.error("demo week not replayed: %s", exc)
            return
        total = sum(sum(c.values()) for c in report.published.values())
        log.info("demo week replayed: %d messages from %d devices", total,
                 len(report.published))

    thread = threading.Thread(target=work, name="demo-week", daemon=True)
    thread.start()
    return thread
