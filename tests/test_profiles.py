"""Firmware profiles load, and `aidlink decode --profile` follows them."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from gateway import profiles
from gateway.cli import main

# 0x2A35 with a time stamp of 2020-11-22 10:00:00 device wall-clock time, 128/82/97, pulse 72.
VECTOR = "1e800052006100e4070b160a00004800010000"


def test_every_shipped_profile_loads() -> None:
    loaded = [profiles.load(name) for name in profiles.names()]
    assert [p.model for p in loaded] == profiles.names()
    assert profiles.load("demo-bpm") == profiles.Profile(
        model="demo-bpm", manufacturer="aidlink", device_class="blood_pressure_monitor",
        zone=ZoneInfo("Europe/Stockholm"), channels=("ble/2a35",))


def test_an_unknown_profile_is_named() -> None:
    with pytest.raises(profiles.ProfileError, match="no firmware profile 'nope'; known: demo-bpm"):
        profiles.load("nope")


def test_decode_uses_the_profile_zone_unless_told_otherwise() -> None:
    runner = CliRunner()
    by_profile = runner.invoke(main, ["decode", "--profile", "demo-bpm", "ble/2a35", VECTOR])
    by_flag = runner.invoke(main, ["decode", "--profile", "demo-bpm", "--zone", "UTC",
                                   "ble/2a35", VECTOR])
    assert '"measured_at":"2020-11-22T09:00:00Z"' in by_profile.output
    assert '"measured_at":"2020-11-22T10:00:00Z"' in by_flag.output


def test_decode_refuses_a_channel_the_profile_lacks() -> None:
    result = CliRunner().invoke(main, ["decode", "--profile", "demo-bpm", "ble/2a9d", "00"])
    assert result.exit_code == 2
    assert result.output == "aidlink: channel 'ble/2a9d' is not one of profile demo-bpm: ble/2a35\n"
