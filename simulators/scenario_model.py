"""The scenario file's schema (pydantic), its loader and the ``${name}`` placeholder resolver.

The format itself is documented in ``simulators.scenario``.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from simulators.devices import CLASSES, DC09_CLASSES, SCAIP_CLASSES
from simulators.faults import FAULTS
from simulators.physiology import Traits

_DURATION = re.compile(r"([+-])?((?:\d+(?:\.\d+)?[dhms])+)")
_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# ${name} or ${name:-default}; the default stands in when no id is given for the name.
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.-]+)(?::-([^}]*))?\}")
_TRAITS = frozenset(field.name for field in dataclasses.fields(Traits))
# Faults that act in a window and need its start; the others may also have one.
_WINDOWED = frozenset({"offline", "clock_skew", "unset_clock", "low_battery",
                       "firmware_upgrade"})


class ScenarioError(ValueError):
    """A scenario file is unreadable or invalid; the message names the file and the field."""


def _duration(value: Any) -> Any:
    """"7d", "1h30m", "-90s" or a number of seconds -> timedelta."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as \"7d\", \"1h30m\" or seconds")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match:
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(match[2]))
            return timedelta(seconds=-seconds if match[1] == "-" else seconds)
    if isinstance(value, timedelta):
        return value
    raise ValueError(f"expected a duration such as \"7d\", \"1h30m\" or seconds, got {value!r}")


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FaultSpec(_Spec):
    """One fault: its kind, when (``start`` and ``duration`` from the scenario start) and odds."""

    kind: str
    probability: Annotated[float, Field(ge=0, le=1)] = 1.0
    start: Duration | None = None
    duration: Duration | None = None
    channels: list[str] = []
    bits: Annotated[int, Field(ge=1, le=64)] = 1
    copies: Annotated[int, Field(ge=1, le=10)] = 1
    depth: Annotated[int, Field(ge=1, le=100)] = 1
    delay: Duration = timedelta(hours=1)
    offset: Duration = timedelta(0)
    level: Annotated[int, Field(ge=0, le=100)] = 8
    version: str | None = None

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULTS)}")
        return kind

    @model_validator(mode="after")
    def _complete(self) -> FaultSpec:
        if self.kind in _WINDOWED and self.start is None:
            raise ValueError(f"fault {self.kind} needs start (when it begins)")
        if self.kind == "firmware_upgrade" and not self.version:
            raise ValueError("fault firmware_upgrade needs version")
        if self.kind == "clock_skew" and not self.offset:
            raise ValueError("fault clock_skew needs a non-zero offset")
        if self.duration is not None and self.duration <= timedelta(0):
            raise ValueError("duration must be positive")
        if self.delay <= timedelta(0):
            raise ValueError("delay must be positive")
        return self


class CommonDeviceSpec(_Spec):
    """What every device entry has: class, model, schedule, person, initial state, faults."""

    class_: str = Field(alias="class")
    model: str = ""
    interval: Duration | None = None
    times: list[time] | None = None
    person: str | None = None
    traits: dict[str, float] = {}
    firmware: str = "1.0.0"
    battery: Annotated[float, Field(ge=0, le=100)] = 100.0
    faults: list[FaultSpec] = []

    @field_validator("class_")
    @classmethod
    def _known_class(cls, kind: str) -> str:
        if kind not in CLASSES:
            raise ValueError(f"unknown device class {kind!r}; known: {', '.join(CLASSES)}")
        return kind

    @field_validator("traits")
    @classmethod
    def _known_traits(cls, traits: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(traits) - _TRAITS)
        if unknown:
            raise ValueError(f"unknown trait {unknown[0]!r}; known: {', '.join(sorted(_TRAITS))}")
        return traits

    @field_validator("interval")
    @classmethod
    def _positive(cls, interval: timedelta | None) -> timedelta | None:
        if interval is not None and interval <= timedelta(0):
            raise ValueError("interval must be positive")
        return interval

    @model_validator(mode="after")
    def _one_person(self) -> CommonDeviceSpec:
        if self.person is not None and self.traits:
            raise ValueError("give either person (a shared [people] entry) or traits, not both")
        return self


class DeviceSpec(CommonDeviceSpec):
    """A peripheral behind a hub (or the hub's own status)."""

    id: str

    @model_validator(mode="after")
    def _on_mqtt_hub(self) -> DeviceSpec:
        if self.class_ in SCAIP_CLASSES | DC09_CLASSES:
            raise ValueError(f"class {self.class_} is not behind a hub: list it under "
                             f"{'[[scaip]]' if self.class_ in SCAIP_CLASSES else '[[dc09]]'}")
        return self


class HubSpec(_Spec):
    """One MQTT identity forwarding for its devices; it also sends its own status."""

    client: str
    username: str | None = None
    password: str | None = None
    status_interval: Duration = timedelta(hours=6)
    faults: list[FaultSpec] = []
    devices: list[DeviceSpec] = []


class ScaipSpec(CommonDeviceSpec):
    """A SCAIP alarm: its own MQTT client, publishing on its own ``scaip`` channel."""

    client: str
    username: str | None = None
    password: str | None = None
    class_: Literal["social_alarm", "mobile_alarm"] = Field("social_alarm", alias="class")
    alarms_per_day: Annotated[float, Field(ge=0, le=100)] = 0.3
    falls_per_day: Annotated[float, Field(ge=0, le=100)] = 0.05


class Dc09Spec(CommonDeviceSpec):
    """A DC-09 alarm unit: its account and receiver (``host:port``; the runner may override)."""

    account: str
    receiver: str | None = None
    class_: Literal["dc09_alarm"] = Field("dc09_alarm", alias="class")
    alarms_per_day: Annotated[float, Field(ge=0, le=100)] = 0.3

    @field_validator("account")
    @classmethod
    def _hex(cls, account: str) -> str:
        if not (PLACEHOLDER.fullmatch(account) or re.fullmatch(r"[0-9A-Fa-f]{1,16}", account)):
            raise ValueError(f"account {account!r} must be 1-16 hex digits or a ${{name}}")
        return account

    @field_validator("receiver")
    @classmethod
    def _host_port(cls, receiver: str | None) -> str | None:
        if receiver is not None and not re.fullmatch(r"[^:\s]+:\d{1,5}", receiver):
            raise ValueError(f"receiver {receiver!r} must be host:port")
        return receiver


class Scenario(_Spec):
    """A whole scenario file."""

    name: str
    description: str = ""
    seed: int = 0
    start: datetime
    duration: Duration
    step: Duration = timedelta(minutes=5)
    speed: Annotated[float, Field(gt=0)] | None = None
    reply_timeout: Annotated[float, Field(ge=0, le=600)] = 2.0
    dc09_reply_timeout: Annotated[float, Field(gt=0, le=60)] = 1.0
    zone: str = "Europe/Stockholm"
    people: dict[str, dict[str, float]] = {}
    hubs: list[HubSpec] = []
    scaip: list[ScaipSpec] = []
    dc09: list[Dc09Spec] = []

    @field_validator("start")
    @classmethod
    def _aware(cls, start: datetime) -> datetime:
        if start.utcoffset() is None:
            raise ValueError("start needs a UTC offset, e.g. 2024-05-06T00:00:00Z")
        return start

    @field_validator("zone")
    @classmethod
    def _zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r}") from None
        return zone

    @field_validator("people")
    @classmethod
    def _traits(cls, people: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for name, traits in people.items():
            unknown = sorted(set(traits) - _TRAITS - {"seed"})
            if unknown:
                raise ValueError(f"{name}: unknown trait {unknown[0]!r}")
        return people

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.duration <= timedelta(0) or self.step <= timedelta(0):
            raise ValueError("duration and step must be positive")
        devices: list[tuple[str, CommonDeviceSpec]] = [
            *((f"scaip.{i}", alarm) for i, alarm in enumerate(self.scaip)),
            *((f"dc09.{i}", unit) for i, unit in enumerate(self.dc09)),
            *((f"hubs.{h}.devices.{i}", device) for h, hub in enumerate(self.hubs)
              for i, device in enumerate(hub.devices)),
        ]
        for where, device in devices:
            if device.person is not None and device.person not in self.people:
                raise ValueError(f"{where}.person: {device.person!r} is not in [people]")
        return self


def load(path: Path | str) -> Scenario:
    """Read and validate a scenario file; ScenarioError names the file and the field."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, source=str(path))


def parse(data: Mapping[str, Any], *, source: str = "scenario") -> Scenario:
    """Validate an already-read scenario; errors name ``source`` and the field."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = "".join(f"{part}: " if i == len(error["loc"]) - 1 else f"{part}."
                        for i, part in enumerate(error["loc"]))
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ScenarioError(f"{source}: {where}{message}") from None
