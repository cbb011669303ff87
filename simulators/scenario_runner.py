"""Running a scenario: devices on a virtual clock, their faults, MQTT hubs, DC-09 links."""

from __future__ import annotations

import functools
import json
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from typing import Any
from zoneinfo import ZoneInfo

from simulators.devices import (
    Dc09AlarmUnit,
    Device,
    GlucoseMeter,
    HubStatus,
    SocialAlarm,
    build,
    derive_seed,
)
from simulators.faults import FAULTS, Fault, FaultChain, FaultLog, Message, Window
from simulators.hub import Hub
from simulators.physiology import Person, Traits
from simulators.scenario_dc09 import Dc09Link
from simulators.scenario_model import CommonDeviceSpec, Dc09Spec, FaultSpec, Scenario
from simulators.scenario_report import Recorder, Report
from simulators.scenario_schedule import ALARM_INTERVAL, DEFAULT_INTERVAL, DEFAULT_TIMES, Schedule

_COMMANDS = 256  # fetch-records requests waiting to be served; more are dropped and counted
_REPLY_POLL = 0.02


@dataclass(slots=True)
class _Node:
    device: Device
    schedule: Schedule
    chain: FaultChain


@dataclass(slots=True)
class _Client:
    client_id: str
    hub: Hub
    chain: FaultChain
    nodes: list[_Node]


@dataclass(slots=True)
class _Unit:
    node: _Node
    link: Dc09Link | None


class Runner:
    """One run of a resolved scenario; ``run`` returns its report."""

    def __init__(self, scenario: Scenario, *, mqtt_url: str, protocol: int = 5,
                 dc09: tuple[str, int] | None = None,
                 stop: threading.Event | None = None) -> None:
        self.s = scenario
        self.start = scenario.start.astimezone(UTC)
        self.end = self.start + scenario.duration
        self.zone = ZoneInfo(scenario.zone)
        self.log = FaultLog()
        self.recorder = Recorder(self.log)
        self.stop = stop or threading.Event()
        self.stopped = False
        self._commands: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=_COMMANDS)
        self.people = {
            name: Person(seed=int(traits.get("seed", derive_seed(scenario.seed, "person", name))),
                         start=self.start, zone=self.zone,
                         traits=Traits(**{k: v for k, v in traits.items() if k != "seed"}))
            for name, traits in scenario.people.items()}
        self.clients: list[_Client] = []
        for index, spec in enumerate(scenario.hubs):
            where = f"hubs.{index}"
            seed = derive_seed(scenario.seed, where)
            status = HubStatus(spec.client, start=self.start, seed=seed, zone=self.zone)
            nodes = [_Node(status, self._schedule(where, spec.status_interval, ()),
                           FaultChain([], self.log))]
            nodes += [self._node(device, device.id, f"{where}.devices.{number}")
                      for number, device in enumerate(spec.devices)]
            self.clients.append(self._client(spec.client, spec.username, spec.password,
                                             self._chain(spec.faults, where, spec.client),
                                             nodes, mqtt_url,
                                             protocol))
        for index, alarm in enumerate(scenario.scaip):
            node = self._node(alarm, alarm.client, f"scaip.{index}")
            assert isinstance(node.device, SocialAlarm)
            node.device.button_per_day = alarm.alarms_per_day
            node.device.fall_per_day = alarm.falls_per_day
            self.clients.append(self._client(alarm.client, alarm.username, alarm.password,
                                             FaultChain([], self.log), [node], mqtt_url,
                                             protocol))
        self.units = [self._unit(unit.account, unit, index, dc09)
                      for index, unit in enumerate(scenario.dc09)]

    def _client(self, client_id: str, username: str | None, password: str | None,
                chain: FaultChain, nodes: list[_Node], mqtt_url: str, protocol: int) -> _Client:
        hub = Hub(mqtt_url, client_id, protocol=protocol, username=username, password=password,
                  on_command=functools.partial(self._command, client_id))
        return _Client(client_id, hub, chain, nodes)

    def _unit(self, account: str, spec: Dc09Spec, index: int,
              override: tuple[str, int] | None) -> _Unit:
        node = self._node(spec, account, f"dc09.{index}")
        target = override
        if target is None and spec.receiver is not None:
            host, _, port = spec.receiver.rpartition(":")
            target = (host, int(port))
        unit = node.device
        assert isinstance(unit, Dc09AlarmUnit)
        unit.alarm_per_day = spec.alarms_per_day
        link = None if target is None else Dc09Link(
            unit, *target, timeout=self.s.dc09_reply_timeout, recorder=self.recorder)
        return _Unit(node, link)

    def _schedule(self, where: str, interval: timedelta | None,
                  times: tuple[clock_time, ...]) -> Schedule:
        return Schedule(self.start, self.zone, derive_seed(self.s.seed, where, "schedule"),
                        interval=interval, times=times)

    def _node(self, spec: CommonDeviceSpec, device_id: str, where: str) -> _Node:
        seed = derive_seed(self.s.seed, where)
        person = self.people[spec.person] if spec.person is not None else Person(
            seed=derive_seed(seed, "person"), start=self.start, traits=Traits(**spec.traits),
            zone=self.zone)
        device = build(spec.class_, device_id, start=self.start, seed=seed, person=person,
                       model=spec.model, zone=self.zone, firmware=spec.firmware,
                       battery=spec.battery)
        times = tuple(spec.times or ()) or DEFAULT_TIMES.get(spec.class_, ())
        interval = spec.interval
        if interval is None and not times:
            alarm = spec.class_ in ("social_alarm", "mobile_alarm", "dc09_alarm")
            interval = ALARM_INTERVAL if alarm else DEFAULT_INTERVAL
        schedule = self._schedule(where, interval, () if interval is not None else times)
        return _Node(device, schedule, self._chain(spec.faults, where, device_id))

    def _chain(self, specs: list[FaultSpec], where: str, owner: str) -> FaultChain:
        return FaultChain([self._fault(spec, derive_seed(self.s.seed, where, "fault", index),
                                       owner) for index, spec in enumerate(specs)], self.log)

    def _fault(self, spec: FaultSpec, seed: int, owner: str) -> Fault:
        window = None
        if spec.start is not None:
            begin = self.start + spec.start
            window = Window(begin, None if spec.duration is None else begin + spec.duration)
        extras: dict[str, dict[str, Any]] = {
            "corrupt": {"bits": spec.bits}, "duplicate": {"copies": spec.copies},
            "out_of_order": {"depth": spec.depth}, "late": {"delay": spec.delay},
            "clock_skew": {"offset": spec.offset}, "low_battery": {"level": spec.level},
            "firmware_upgrade": {"version": spec.version},
        }
        return FAULTS[spec.kind](seed=seed, probability=spec.probability, window=window,
                                 channels=spec.channels, owner=owner,
                                 **extras.get(spec.kind, {}))

    def _command(self, client_id: str, command: str, payload: bytes) -> None:
        """A down command, on the MQTT thread: replies are noted, replays queued."""
        if command == "scaip":
            self.recorder.scaip_reply(client_id, payload)
        elif command == "fetch-records":
            try:
                self._commands.put_nowait((client_id, payload))
            except queue.Full:
                self.recorder.dropped_command()

    def run(self) -> Report:
        """Connect, step through virtual time, drain, await replies, disconnect."""
        connected: list[Hub] = []
        try:
            for client in self.clients:
                client.hub.connect()
                connected.append(client.hub)
            self._steps()
            if not self.stopped:
                self._finish()
        finally:
            for hub in connected:
                hub.close()
            for unit in self.units:
                if unit.link is not None:
                    unit.link.close()
        return self.recorder.report(self.s.name, self.s.seed, self.start, self.end, self.stopped)

    def _steps(self) -> None:
        began = time.monotonic()
        now = self.start
        while now < self.end:
            if self.stop.is_set():
                self.stopped = True
                return
            for client in self.clients:
                # Held messages first: a hub back online flushes its buffer before new values.
                messages = client.chain.release(now)
                messages += [out for node in client.nodes
                             for out in client.chain.push(self._read(node, now, client.chain), now)]
                self._publish(client, messages, now)
            for unit in self.units:
                self._deliver(unit, self._read(unit.node, now, None), now)
            self._serve(now)
            now += self.s.step
            if self.s.speed is not None:
                lag = began + (now - self.start).total_seconds() / self.s.speed - time.monotonic()
                if lag > 0:
                    self.stop.wait(lag)

    def _read(self, node: _Node, now: datetime, outer: FaultChain | None) -> list[Message]:
        """The node's readings due by ``now`` through its own faults."""
        node.chain.prepare(node.device, now)
        if outer is not None:
            outer.prepare(node.device, now)
        fresh = [Message(node.device.id, channel, payload, at)
                 for at in node.schedule.due(now)
                 for channel, payload in node.device.readings(at)]
        return node.chain.release(now) + node.chain.push(fresh, now)

    def _publish(self, client: _Client, messages: list[Message], now: datetime) -> None:
        for message in messages:
            if message.channel == "scaip":
                self.recorder.await_reply(message)
            client.hub.publish(message.device, message.channel, message.payload, received_at=now)
            self.recorder.published(message, now)

    def _deliver(self, unit: _Unit, messages: list[Message], now: datetime) -> None:
        for message in messages:
            self.recorder.sent(message)
            if unit.link is None:
                self.recorder.dc09(unit.node.device.id, "skipped")
                continue
            delivered = unit.link.deliver(message)
            if delivered is not None:
                self.recorder.delivered(delivered, now)

    def _serve(self, now: datetime) -> None:
        """Answer queued fetch-records commands with the meter's stored records."""
        while True:
            try:
                client_id, payload = self._commands.get_nowait()
            except queue.Empty:
                return
            self._replay(next(c for c in self.clients if c.client_id == client_id), payload, now)

    def _replay(self, client: _Client, payload: bytes, now: datetime) -> None:
        try:
            request = json.loads(payload)
            device_id, channel = str(request["device"]), str(request["channel"])
            after = int(request["after"])
        except (ValueError, KeyError, TypeError):
            self.recorder.replay(hub=client.client_id, error="unreadable fetch-records")
            return
        entry: dict[str, Any] = {"hub": client.client_id, "device": device_id,
                                 "channel": channel, "after": after}
        meter = next((node.device for node in client.nodes if node.device.id == device_id), None)
        if not isinstance(meter, GlucoseMeter) or channel != "ble/2a18":
            self.recorder.replay(**entry, error="no stored records for this device and channel")
            return
        records = [Message(device_id, ch, body, now) for ch, body in meter.records_after(after)]
        self._publish(client, records, now)
        self.recorder.replay(**entry, served=sum(m.channel == channel for m in records))

    def _finish(self) -> None:
        """Release everything still held, then await SCAIP replies up to the timeout."""
        end = self.end
        for client in self.clients:
            messages = [out for node in client.nodes
                        for out in client.chain.push(node.chain.drain(end), end)]
            self._publish(client, messages + client.chain.drain(end), end)
        for unit in self.units:
            self._deliver(unit, unit.node.chain.drain(end), end)
        deadline = time.monotonic() + self.s.reply_timeout
        while self.recorder.awaiting() and time.monotonic() < deadline:
            self._serve(end)
            if self.stop.wait(_REPLY_POLL):
                break
        self._serve(end)
