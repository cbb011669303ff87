"""Firmware profiles load and validate, and `aidlink decode --profile` follows them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway import profiles
from gateway.cli import main

# 0x2A35 with a time stamp of 2020-11-22 10:00:00 device wall-clock time, 128/82/97, pulse 72.
VECTOR = "1e800052006100e4070b160a00004800010000"
VALID = {
    "manufacturer": "Acme", "model": "acme-bpm", "device_class": "blood_pressure_monitor",
    "firmware_versions": ["1.0", "1.2"], "minimum_secure_firmware": "1.2",
    "zone": "Europe/Stockholm", "clock": "local", "reporting_interval": "P1D",
    "battery_low_percent": 20, "quirks": [], "channels": {"ble/2a35": "bpm"},
}


def test_every_shipped_profile_is_valid() -> None:
    assert profiles.check() == []
    assert sorted(profiles.by_model()) == profiles.names()


def test_at_least_ten_profiles_cover_every_device_class() -> None:
    shipped = profiles.by_model().values()
    assert len(profiles.names()) >= 10
    assert {p.device_class for p in shipped} == set(profiles.DeviceClass)


def test_the_demo_cuff_profile() -> None:
    cuff = profiles.load("sim-bpm")
    assert (cuff.device_class, cuff.zone, cuff.clock) == (
        profiles.DeviceClass.BLOOD_PRESSURE_MONITOR, "Europe/Stockholm", "local")
    assert cuff.reporting_interval == timedelta(days=1)
    assert cuff.firmware_is_secure("1.1.0")
    assert cuff.firmware_is_secure("1.2.0")
    assert not cuff.firmware_is_secure("1.0.0")


@pytest.mark.parametrize(("change", "message"), [
    ({"clock": "sundial"}, "clock"),
    ({"zone": "Mars/Olympus"}, "unknown zone 'Mars/Olympus'"),
    ({"channels": {"ble/ffff": "x"}}, "channels without an adapter: ble/ffff"),
    ({"minimum_secure_firmware": "9.9"}, "is not among firmware_versions"),
    ({"firmware_versions": ["1.x"]}, "is not dotted numbers"),
    ({"battery_low_percent": 120}, "battery_low_percent"),
    ({"colour": "red"}, "colour"),
])
def test_a_profile_breaking_a_rule_is_refused_naming_it(change: dict[str, object],
                                                        message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        profiles.Profile.model_validate({**VALID, **change})


def test_an_unknown_profile_is_named() -> None:
    with pytest.raises(profiles.ProfileError, match="no firmware profile 'nope'; known: "):
        profiles.load("nope")


def test_profiles_check_command_lists_valid_profiles() -> None:
    result = CliRunner().invoke(main, ["profiles", "check"])
    assert result.exit_code == 0, result.output
    assert "sim-bpm" in result.output


def test_decode_uses_the_profile_zone_unless_told_otherwise() -> None:
    runner = CliRunner()
    by_profile = runner.invoke(main, ["decode", "--profile", "sim-bpm", "ble/2a35", VECTOR])
    by_flag = runner.invoke(main, ["decode", "--profile", "sim-bpm", "--zone", "UTC",
                                   "ble/2a35", VECTOR])
    assert '"measured_at":"2020-11-22T09:00:00Z"' in by_profile.output
    assert '"measured_at":"2020-11-22T10:00:00Z"' in by_flag.output


def test_decode_refuses_a_channel_the_profile_lacks() -> None:
    result = CliRunner().invoke(main, ["decode", "--profile", "sim-bpm", "ble/2a9d", "00"])
    assert result.exit_code == 2
    assert result.output.startswith("aidlink: channel 'ble/2a9d' is not one of profile sim-bpm")


def test_profiles_ship_with_the_package() -> None:
    shipped = Path(profiles.__file__).parent.parent / "firmware_profiles"
    assert sorted(p.stem for p in shipped.glob("*.toml")) == profiles.names()
