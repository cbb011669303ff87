"""Shared helpers of the ``aidlink`` command-line tests: click's runner, the AIDLINK_*
environment of one invocation, the parsing of its output, and the fixtures several test
modules use. No tests here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gateway import db
from gateway.cli import main

SECRET_TEXT = "aidlink-cli-test-secret-0123456789abcdef"

# Blood Pressure Measurement (GATT 0x2A35), built from the spec's field layout: flags 0x1e
# (mmHg, time stamp, pulse rate, user id, measurement status), systolic 128, diastolic 82,
# MAP 97 (SFLOAT, exponent 0), time stamp 2020-11-22 10:00:00 (the device's wall clock),
# pulse 72/min, user 1, status 0x0000.
BP_WITH_TIME = "1e800052006100e4070b160a00004800010000"
BP_PANEL = "85354-9"


def bp_values(measured_at: str) -> list[dict[str, Any]]:
    """The canonical lines BP_WITH_TIME decodes to, with its time as given."""

    def line(code: str, mdc: int, value: int, unit: str, panel: str | None) -> dict[str, Any]:
        return {"kind": "observation", "code": code, "mdc": mdc, "value": value, "unit": unit,
                "measured_at": measured_at, "flags": [], "absent_reason": None,
                "panel": panel, "device_user": 1, "sequence": None}

    return [
        line("8480-6", 150021, 128, "mm[Hg]", BP_PANEL),
        line("8462-4", 150022, 82, "mm[Hg]", BP_PANEL),
        line("8478-0", 150023, 97, "mm[Hg]", BP_PANEL),
        line("8867-4", 149546, 72, "/min", None),
    ]


def environment(home: Path, url: str | None = None, secret: str | None = SECRET_TEXT
                ) -> dict[str, str | None]:
    """The AIDLINK_* environment of one invocation (None removes a variable)."""
    return {"AIDLINK_DATABASE_URL": url, "AIDLINK_HOME": str(home), "AIDLINK_SECRET": secret,
            "AIDLINK_MQTT_URL": None}


def run(env: Mapping[str, str | None], *args: str, stdin: bytes | None = None) -> Result:
    """Invoke ``aidlink ARGS`` in-process."""
    return CliRunner().invoke(main, list(args), env=env, input=stdin, catch_exceptions=False)


def lines(result: Result) -> list[dict[str, Any]]:
    """stdout as JSON lines."""
    return [json.loads(line) for line in result.stdout.splitlines()]


def one(result: Result) -> dict[str, Any]:
    """stdout as exactly one JSON object on one line."""
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("\n") == 1, result.stdout
    value = json.loads(result.stdout)
    assert isinstance(value, dict)
    return value


def failure(result: Result, code: int = 1) -> str:
    """The single stderr line of a failed invocation (nothing on stdout)."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def timestamp(text: str) -> datetime:
    """A UTC RFC 3339 time from the command line's JSON."""
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str | None]:
    """An environment whose database is migrated."""
    db.migrate(database_url)
    return environment(tmp_path, database_url)


@pytest.fixture
def offline(tmp_path: Path) -> dict[str, str | None]:
    """An environment with no database and an empty home."""
    return environment(tmp_path)


def add_principal(env: Mapping[str, str | None], code: str, device_auth: str = "mtls") -> None:
    """Register a principal through the command line."""
    one(run(env, "principal", "add", code, "--name", f"Principal {code}",
            "--device-auth", device_auth))
