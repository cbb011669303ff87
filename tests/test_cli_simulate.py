"""`aidlink simulate --scenario FILE` against a real broker."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from gateway.cli import main
from gateway.services.mosquitto import MosquittoProcess

SCENARIO = """
name = "two-days"
seed = 3
start = 2024-05-06T00:00:00Z
duration = "2d"
step = "30m"

[[hubs]]
client = "${hub}"

[[hubs.devices]]
id = "${cuff}"
class = "blood_pressure_monitor"
model = "sim-bpm"
times = ["07:30", "19:30"]
"""


def _run(tmp_path: Path, broker: MosquittoProcess, *args: str) -> tuple[int, str]:
    env = {"AIDLINK_MQTT_URL": broker.url, "AIDLINK_HOME": str(tmp_path / "home")}
    result = CliRunner().invoke(main, ["simulate", *args], env=env)
    return result.exit_code, result.output


def test_a_scenario_file_runs_and_reports(tmp_path: Path, mosquitto: MosquittoProcess) -> None:
    scenario = tmp_path / "two-days.toml"
    scenario.write_text(SCENARIO)
    code, output = _run(tmp_path, mosquitto, "--scenario", str(scenario),
                        "--id", "hub=dev-hub1", "--id", "cuff=dev-cuff1")
    assert code == 0, output
    report = json.loads(output)
    assert report["scenario"] == "two-days"
    # Two readings a day for two days; each reading is one 0x2A35 payload.
    assert report["published"]["dev-cuff1"]["ble/2a35"] == 4
    assert {e["device"] for e in report["expected"]} >= {"dev-cuff1"}


def test_bad_arguments_and_files_are_named(tmp_path: Path, mosquitto: MosquittoProcess) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(SCENARIO.replace('duration = "2d"', 'duration = "forever"'))
    code, output = _run(tmp_path, mosquitto, "--scenario", str(broken),
                        "--id", "hub=a", "--id", "cuff=b")
    assert code == 2
    assert "broken.toml" in output and "duration" in output
    code, output = _run(tmp_path, mosquitto, "--scenario", str(broken), "--id", "hub")
    assert (code, output) == (2, "aidlink: --id 'hub' must look like NAME=DEVICE\n")
    code, output = _run(tmp_path, mosquitto)
    assert (code, output) == (1, "aidlink: give --scenario FILE, or --hub CLIENT for "
                                 "simulated cuffs\n")
