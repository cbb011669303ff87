"""`aidlink decode` and the installed console script: payloads in, canonical lines out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.registry import ADAPTERS
from gateway import db
from tests.cli_support import BP_WITH_TIME, bp_values, environment, failure, lines, run
from tests.support import count


@pytest.fixture
def offline(tmp_path: Path) -> dict[str, str | None]:
    """An environment with no database and an empty home."""
    return environment(tmp_path)


def test_decode_bp_with_time_stamp_prints_one_canonical_line_per_value(
        offline: dict[str, str | None]) -> None:
    result = run(offline, "decode", "ble/2a35", BP_WITH_TIME)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    # 10:00 on the device's Stockholm wall clock in November (CET, UTC+1) is 09:00Z.
    assert lines(result) == bp_values("2020-11-22T09:00:00Z")


def test_decode_dash_reads_raw_bytes_from_stdin(offline: dict[str, str | None]) -> None:
    result = run(offline, "decode", "ble/2a35", "-", stdin=bytes.fromhex(BP_WITH_TIME))
    assert result.exit_code == 0, result.stderr
    assert lines(result) == bp_values("2020-11-22T09:00:00Z")


def test_decode_zone_utc_reads_the_device_clock_as_utc(offline: dict[str, str | None]) -> None:
    result = run(offline, "decode", "ble/2a35", BP_WITH_TIME, "--zone", "UTC")
    assert result.exit_code == 0, result.stderr
    assert lines(result) == bp_values("2020-11-22T10:00:00Z")


def test_decode_truncated_payload_exits_2_with_one_line_reason(
        offline: dict[str, str | None]) -> None:
    message = failure(run(offline, "decode", "ble/2a35", "1e80"), 2)
    assert message == "aidlink: ble/2a35: payload is 2 bytes; a measurement needs at least 7\n"


def test_decode_unknown_channel_exits_2_listing_known_channels(
        offline: dict[str, str | None]) -> None:
    assert "ble/2a35" in ADAPTERS
    message = failure(run(offline, "decode", "ble/9999", "00"), 2)
    assert message == (
        f"aidlink: unknown channel 'ble/9999'; known: {', '.join(sorted(ADAPTERS))}\n"
    )


@pytest.mark.parametrize("payload", ["zz", "1e8", "0x1g"])
def test_decode_non_hex_payload_exits_2_naming_it(offline: dict[str, str | None],
                                                    payload: str) -> None:
    message = failure(run(offline, "decode", "ble/2a35", payload), 2)
    assert message == f"aidlink: ble/2a35: payload is not hex: {payload!r}\n"


def test_console_script_decodes_stdin(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "aidlink"
    assert script.exists(), f"console script {script} is not installed"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIDLINK_")}
    completed = subprocess.run(
        [str(script), "decode", "ble/2a35", "-"], input=bytes.fromhex(BP_WITH_TIME),
        capture_output=True, timeout=60, check=False,
        env={**clean, "AIDLINK_HOME": str(tmp_path)},
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == b""
    decoded = [json.loads(line) for line in completed.stdout.decode().splitlines()]
    assert decoded == bp_values("2020-11-22T09:00:00Z")


def test_console_script_migrates_a_database(database_url: str, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "aidlink"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIDLINK_")}
    completed = subprocess.run(
        [str(script), "db", "migrate"], capture_output=True, timeout=60, check=False,
        env={**clean, "AIDLINK_HOME": str(tmp_path), "AIDLINK_DATABASE_URL": database_url},
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {"applied": db.migration_names()}
    assert count(database_url, "SELECT count(*) FROM schema_migrations") == len(
        db.migration_names())
