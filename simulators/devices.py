"""Simulated devices, one per device class, each sending exactly what the hardware would.

Every device has ``readings(at) -> list[(channel, payload)]`` for a virtual moment ``at``:
GATT characteristic values (``ble/2a35`` ...), SCAIP XML (``scaip``), DC-09 frames (``dc09``,
sent over TCP rather than MQTT) or our JSON documents (``spirometer``, ``dispenser``, ``lock``,
``status``, and the home tests' ``calprotectin``, ``tonometer``, ``urinalysis``,
``night_supervision`` and ``ecg``). Physiological devices are driven by a
``simulators.physiology.Person``; every device has a ``DeviceState`` (battery that drains,
firmware, a clock that can be skewed or unset) that faults change while a scenario runs.

The classes live in ``devices_ble``, ``devices_docs``, ``devices_alarm`` and
``devices_home``; ``CLASSES`` maps the class names used in scenario files to them and
``build`` makes one.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from simulators.devices_alarm import Dc09AlarmUnit, MobileAlarm, SocialAlarm
from simulators.devices_base import (
    LOW_BATTERY,
    RTC_EPOCH,
    BleDevice,
    Device,
    DeviceState,
    Reading,
    derive_seed,
)
from simulators.devices_ble import (
    BloodPressureMonitor,
    BodyCompositionScale,
    ContinuousPulseOximeter,
    GlucoseMeter,
    PulseOximeter,
    Scale,
    Thermometer,
)
from simulators.devices_docs import (
    DigitalLock,
    HubStatus,
    MedicationDispenser,
    PeakFlowMeter,
    Spirometer,
)
from simulators.devices_home import (
    CalprotectinTest,
    NightSupervision,
    OneLeadEcg,
    Tonometer,
    UrineReader,
)
from simulators.physiology import STOCKHOLM, Person

CLASSES: dict[str, type[Device]] = {
    cls.kind: cls
    for cls in (
        BloodPressureMonitor, Scale, BodyCompositionScale, PulseOximeter,
        ContinuousPulseOximeter, GlucoseMeter, Thermometer, Spirometer, PeakFlowMeter,
        MedicationDispenser, DigitalLock, SocialAlarm, MobileAlarm, Dc09AlarmUnit, HubStatus,
        # Issue 8, next device classes: our home-test documents (simulators.devices_home).
        CalprotectinTest, Tonometer, UrineReader, NightSupervision, OneLeadEcg,
    )
}
# Classes that are their own MQTT client (SCAIP) or not on MQTT at all (DC-09).
SCAIP_CLASSES = frozenset({SocialAlarm.kind, MobileAlarm.kind})
DC09_CLASSES = frozenset({Dc09AlarmUnit.kind})


def build(kind: str, device_id: str, *, start: datetime, seed: int,
          person: Person | None = None, model: str = "", zone: ZoneInfo = STOCKHOLM,
          firmware: str = "1.0.0", battery: float = 100.0) -> Device:
    """A device of class ``kind``; ValueError naming the known classes for an unknown one."""
    try:
        cls = CLASSES[kind]
    except KeyError:
        raise ValueError(f"unknown device class {kind!r}; known: {', '.join(CLASSES)}") from None
    return cls(device_id, start=start, seed=seed, person=person, model=model, zone=zone,
               firmware=firmware, battery=battery)


__all__ = [
    "CLASSES", "DC09_CLASSES", "LOW_BATTERY", "RTC_EPOCH", "SCAIP_CLASSES", "BleDevice",
    "BloodPressureMonitor", "BodyCompositionScale", "CalprotectinTest", "ContinuousPulseOximeter",
    "Dc09AlarmUnit", "Device", "DeviceState", "DigitalLock", "GlucoseMeter", "HubStatus",
    "MedicationDispenser", "MobileAlarm", "NightSupervision", "OneLeadEcg", "PeakFlowMeter",
    "PulseOximeter", "Reading", "Scale", "SocialAlarm", "Spirometer", "Thermometer", "Tonometer",
    "UrineReader", "build", "derive_seed",
]
