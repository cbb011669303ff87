"""Scenarios: a simulated fleet, its people and its faults in one TOML file, and its runner.

``aidlink simulate --scenario FILE`` runs one; ``run_file`` is the same from Python. Time is
virtual: the runner steps from ``start`` to ``start + duration`` by ``step`` as fast as it can
(a week takes seconds) unless ``speed`` paces it (virtual seconds per real second; 1 = real
time). Every payload goes out with QoS 1 on ``aidlink/v1/{hub}/{device}/{channel}``, with the
MQTT 5 user properties ``received-at`` (the virtual moment the hub got it) and ``seq``.

The format (durations are "7d", "1h30m", "-90s" or seconds; ``start`` is a TOML date-time
with offset; times of day are local, in ``zone``)::

    name = "week"                       # required
    seed = 7                            # everything random derives from it
    start = 2024-05-06T00:00:00Z        # required
    duration = "7d"                     # required
    step = "5m"                         # default 5m
    speed = 3600                        # optional pacing
    reply_timeout = 2.0                 # s to await SCAIP <mrs> replies at the end
    dc09_reply_timeout = 1.0            # s a DC-09 unit waits for ACK/NAK before resending
    zone = "Europe/Stockholm"           # the zone devices and people live in

    [people.anna]                       # a simulated person: physiology.Traits fields
    systolic = 150                      # (and an optional seed)
    systolic_per_day = 0.8

    [[hubs]]
    client = "${hub}"                   # MQTT client id; username/password optional
    status_interval = "6h"              # the hub's own status document
    faults = [{kind = "offline", start = "2d", duration = "6h"}]   # for all its devices

    [[hubs.devices]]
    id = "${bpm}"                       # device id as registered in aidlink
    class = "blood_pressure_monitor"    # see simulators.devices.CLASSES
    model = "sim-bpm"
    person = "anna"                     # or: traits = {weight_kg = 95}
    times = ["07:30", "19:30"]          # or: interval = "10m" (class defaults otherwise)
    firmware = "1.0.0"
    battery = 100
    faults = [{kind = "duplicate", probability = 0.1}]

    [[scaip]]                           # a SCAIP alarm: its own MQTT client
    client = "${alarm}"
    class = "social_alarm"              # or mobile_alarm (GPS); interval = heartbeats
    interval = "1h"
    alarms_per_day = 0.3                # button alarms (mean rate); falls_per_day = 0.05

    [[dc09]]                            # a DC-09 unit over TCP (run's dc09= overrides receiver)
    account = "1234"                    # hex, or a ${name}
    receiver = "127.0.0.1:12000"
    alarms_per_day = 0.3                # personal-emergency events; interval = link tests

A fault has ``kind`` (truncate, corrupt, duplicate, out_of_order, late, offline, clock_skew,
unset_clock, low_battery, firmware_upgrade), ``probability`` (per message, default 1),
``start`` and ``duration`` (a window measured from the scenario start; required for offline
and the device faults), ``channels`` (only these), and per kind ``bits`` (corrupt),
``copies`` (duplicate), ``depth`` (out_of_order), ``delay`` (late), ``offset`` (clock_skew),
``level`` (low_battery) and ``version`` (firmware_upgrade).

``${name}`` placeholders in client ids, credentials, device ids and accounts are resolved
from ``ids``; a name missing from ``ids`` is an error unless written ``${name:-default}``.
Without ``ids`` each stands for its default, else its bare name.
While running, each hub answers the gateway's ``fetch-records`` command with the glucose
meter's stored records and each SCAIP alarm awaits its ``<mrs>`` replies.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simulators.scenario_model import (
    PLACEHOLDER,
    HubSpec,
    ScaipSpec,
    Scenario,
    ScenarioError,
    load,
    parse,
)
from simulators.scenario_report import Report
from simulators.scenario_runner import Runner

SCENARIOS = Path(__file__).parent / "scenarios"
_ACCOUNT = re.compile(r"[0-9A-Fa-f]{1,16}")


def resolve(scenario: Scenario, ids: Mapping[str, str] | None) -> Scenario:
    """Replace every ``${name}`` in ids, accounts and credentials; None keeps the bare names."""
    missing: set[str] = set()

    def sub(text: str | None) -> str | None:
        if text is None:
            return None

        def one(match: re.Match[str]) -> str:
            name, default = match[1], match[2]
            if ids is not None and name in ids:
                return ids[name]
            if default is not None:
                return default
            if ids is None:
                return name
            missing.add(name)
            return match[0]

        return PLACEHOLDER.sub(one, text)

    def creds(spec: HubSpec | ScaipSpec) -> dict[str, Any]:
        return {"client": sub(spec.client), "username": sub(spec.username),
                "password": sub(spec.password)}

    hubs = [hub.model_copy(update={
        **creds(hub),
        "devices": [device.model_copy(update={"id": sub(device.id)}) for device in hub.devices],
    }) for hub in scenario.hubs]
    scaip = [alarm.model_copy(update=creds(alarm)) for alarm in scenario.scaip]
    dc09 = [unit.model_copy(update={"account": sub(unit.account)}) for unit in scenario.dc09]
    if missing:
        raise ScenarioError(f"scenario {scenario.name}: no id given for "
                            f"{', '.join('${' + name + '}' for name in sorted(missing))}")
    for unit in dc09:
        if not _ACCOUNT.fullmatch(unit.account):
            raise ScenarioError(f"scenario {scenario.name}: DC-09 account {unit.account!r} "
                                "is not 1-16 hex digits")
    return scenario.model_copy(update={"hubs": hubs, "scaip": scaip, "dc09": dc09})


def run(scenario: Scenario, *, mqtt_url: str, protocol: int = 5,
        dc09: tuple[str, int] | None = None, stop: threading.Event | None = None,
        ids: Mapping[str, str] | None = None) -> Report:
    """Run a scenario against a broker (and a DC-09 receiver) and report what happened."""
    resolved = resolve(scenario, ids)
    return Runner(resolved, mqtt_url=mqtt_url, protocol=protocol, dc09=dc09, stop=stop).run()


def run_file(path: Path, *, mqtt_url: str, protocol: int = 5,
             dc09: tuple[str, int] | None = None, stop: threading.Event | None = None,
             ids: Mapping[str, str] | None = None) -> Report:
    """Load and run a scenario file."""
    return run(load(path), mqtt_url=mqtt_url, protocol=protocol, dc09=dc09, stop=stop, ids=ids)


__all__ = ["SCENARIOS", "Report", "Scenario", "ScenarioError", "load", "parse", "resolve",
           "run", "run_file"]
