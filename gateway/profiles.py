"""Firmware profiles: one declarative TOML file per device model in ``firmware_profiles/``.

A profile says what a model is (manufacturer, class), which firmware exists and which is the
minimum secure one, which channels it speaks (each must have an adapter), how its clock
behaves (local wall-clock in ``zone``, UTC, or no clock), how often it reports (supervision),
when its battery counts as low, and its quirks. ``aidlink profiles check`` validates them all.
"""

from __future__ import annotations

import functools
import tomllib
from datetime import timedelta
from enum import StrEnum
from importlib import resources
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from adapters.registry import ADAPTERS


class ProfileError(Exception):
    """A profile is missing or malformed; the message names the file and the field."""


class DeviceClass(StrEnum):
    """The device classes of the shared range."""

    BLOOD_PRESSURE_MONITOR = "blood_pressure_monitor"
    SCALE = "scale"
    BODY_COMPOSITION_SCALE = "body_composition_scale"
    PULSE_OXIMETER = "pulse_oximeter"
    GLUCOSE_METER = "glucose_meter"
    THERMOMETER = "thermometer"
    SPIROMETER = "spirometer"
    PEAK_FLOW_METER = "peak_flow_meter"
    MEDICATION_DISPENSER = "medication_dispenser"
    SOCIAL_ALARM = "social_alarm"
    MOBILE_ALARM = "mobile_alarm"
    DIGITAL_LOCK = "digital_lock"
    HUB = "hub"
    CALPROTECTIN_TEST = "calprotectin_test"
    TONOMETER = "tonometer"
    URINE_READER = "urine_reader"
    NIGHT_SUPERVISION = "night_supervision"
    ONE_LEAD_ECG = "one_lead_ecg"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


class Profile(BaseModel):
    """One device model, validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    manufacturer: str = Field(min_length=1, max_length=100)
    model: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    device_class: DeviceClass
    firmware_versions: tuple[str, ...] = Field(min_length=1)
    minimum_secure_firmware: str
    zone: str = "Europe/Stockholm"
    clock: Literal["local", "utc", "none"]
    reporting_interval: timedelta
    battery_low_percent: int = Field(ge=0, le=100)
    quirks: tuple[str, ...] = ()
    channels: dict[str, str] = Field(min_length=1)

    @field_validator("firmware_versions")
    @classmethod
    def _versions_are_dotted_numbers(cls, versions: tuple[str, ...]) -> tuple[str, ...]:
        for version in versions:
            if not all(part.isdigit() for part in version.split(".")):
                raise ValueError(f"firmware version {version!r} is not dotted numbers")
        return versions

    @field_validator("zone")
    @classmethod
    def _zone_exists(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown zone {zone!r}") from None
        return zone

    @field_validator("channels")
    @classmethod
    def _channels_have_adapters(cls, channels: dict[str, str]) -> dict[str, str]:
        missing = sorted(c for c in channels if c not in ADAPTERS)
        if missing:
            raise ValueError(f"channels without an adapter: {', '.join(missing)}")
        return channels

    @model_validator(mode="after")
    def _minimum_is_a_known_version(self) -> Profile:
        if self.minimum_secure_firmware not in self.firmware_versions:
            raise ValueError(f"minimum_secure_firmware {self.minimum_secure_firmware!r} "
                             "is not among firmware_versions")
        if self.reporting_interval <= timedelta(0):
            raise ValueError("reporting_interval must be positive")
        return self

    @property
    def zone_info(self) -> ZoneInfo:
        """The zone of the device's wall clock."""
        return ZoneInfo(self.zone)

    def firmware_is_secure(self, version: str) -> bool:
        """Whether a firmware version is at least the minimum secure one."""
        return _version_key(version) >= _version_key(self.minimum_secure_firmware)


def names() -> list[str]:
    """The models that have a profile."""
    files = resources.files("firmware_profiles").iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def load(model: str) -> Profile:
    """Read and check one model's profile."""
    if model not in names():
        raise ProfileError(f"no firmware profile {model!r}; known: {', '.join(names())}")
    source = f"firmware_profiles/{model}.toml"
    text = resources.files("firmware_profiles").joinpath(f"{model}.toml").read_text("utf-8")
    try:
        profile = Profile.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{source}: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(file)"
        raise ProfileError(f"{source}: {where}: {first['msg']}") from None
    if profile.model != model:
        raise ProfileError(f"{source}: model {profile.model!r} differs from the file name")
    return profile


@functools.cache
def by_model() -> dict[str, Profile]:
    """Every valid profile by model (cached; invalid ones are left to ``check``)."""
    found = {}
    for name in names():
        try:
            found[name] = load(name)
        except ProfileError:
            continue
    return found


def check() -> list[str]:
    """Every problem in every profile, one line each (empty when all are valid)."""
    problems = []
    for name in names():
        try:
            load(name)
        except ProfileError as exc:
            problems.append(str(exc))
    return problems
