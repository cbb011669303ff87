"""Firmware profiles: what aidlink knows about a device model, from ``firmware_profiles/``."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapters.registry import ADAPTERS


class ProfileError(Exception):
    """A profile is missing or malformed; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class Profile:
    """One device model."""

    model: str
    manufacturer: str
    device_class: str
    zone: ZoneInfo
    channels: tuple[str, ...]


def names() -> list[str]:
    """The models that have a profile."""
    files = resources.files("firmware_profiles").iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def load(model: str) -> Profile:
    """Read and check one model's profile."""
    if model not in names():
        raise ProfileError(f"no firmware profile {model!r}; known: {', '.join(names())}")
    source = f"firmware_profiles/{model}.toml"
    try:
        raw = tomllib.loads(resources.files("firmware_profiles").joinpath(f"{model}.toml")
                            .read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{source}: {exc}") from exc
    try:
        fields = {key: raw[key] for key in ("manufacturer", "model", "device_class", "zone",
                                            "channels")}
    except KeyError as exc:
        raise ProfileError(f"{source}: missing field {exc.args[0]!r}") from None
    if fields["model"] != model:
        raise ProfileError(f"{source}: model {fields['model']!r} differs from the file name")
    unknown = [c for c in fields["channels"] if c not in ADAPTERS]
    if unknown:
        raise ProfileError(f"{source}: channels without an adapter: {', '.join(unknown)}")
    try:
        zone = ZoneInfo(fields["zone"])
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ProfileError(f"{source}: unknown zone {fields['zone']!r}") from exc
    return Profile(model=model, manufacturer=str(fields["manufacturer"]),
                   device_class=str(fields["device_class"]), zone=zone,
                   channels=tuple(str(c) for c in fields["channels"]))
