"""``aidlink up`` as a newcomer runs it: embedded PostgreSQL, a broker, gateway, API, demo."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.services.mosquitto import find_mosquitto
from gateway.services.postgres import find_free_port
from simulators.bpm import BpReading, encode
from simulators.hub import Hub
from tests.conftest import missing_component
from tests.support import wait_for

AIDLINK = str(Path(sys.executable).parent / "aidlink")


class Up:
    """A running ``aidlink up`` child process."""

    def __init__(self, home: Path, *extra: str) -> None:
        self.home = home
        self.mqtt_port = find_free_port()
        self.api_port = find_free_port()
        self.dc09_port = find_free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.out = home.parent / f"up-{time.monotonic_ns()}.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIDLINK_")}
        with self.out.open("wb") as log:
            self.process = subprocess.Popen(
                [AIDLINK, "up", "--demo", "--home", str(home), "--mqtt-port",
                 str(self.mqtt_port), "--api-port", str(self.api_port),
                 "--dc09-port", str(self.dc09_port), "--demo-interval",
                 "0.5", *extra],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for(self._healthy, timeout=90, what=f"aidlink up to be healthy ({self.out})")

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"aidlink up exited early:\n{self.out.read_text()}")
        try:
            with urllib.request.urlopen(f"{self.api}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def token(self) -> str:
        lines = self.out.read_text().splitlines()
        return lines[lines.index(next(x for x in lines if "token (clinician" in x)) + 1].strip()

    def get(self, path: str, token: str) -> Any:
        request = urllib.request.Request(f"{self.api}{path}",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def stop(self, sig: int) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=60)


@pytest.fixture
def home() -> Iterator[Path]:
    # Under /tmp rather than tmp_path: as root, the embedded PostgreSQL runs as its own user,
    # which cannot enter pytest's private temporary directory.
    root = Path(tempfile.mkdtemp(prefix="aidlink-up-"))
    os.chmod(root, 0o755)
    yield root / "home"
    shutil.rmtree(root, ignore_errors=True)


def _cli(home: Path, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIDLINK_")}
    done = subprocess.run([AIDLINK, "--home", str(home), *args], capture_output=True,
                          text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _servers_of(home: Path) -> list[str]:
    found = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return [line for line in found.stdout.splitlines()
            if str(home) in line and "aidlink" not in line.split()[0]]


def test_up_demo_serves_readings_takes_a_new_device_and_restarts_on_its_data(home: Path) -> None:
    if find_mosquitto() is None:
        missing_component("mosquitto not installed: apt-get install mosquitto")
    up = Up(home)
    try:
        token = up.token()
        demo = wait_for(lambda: up.get("/fhir/r4/Observation?subject=Patient/demo-patient-1",
                                        token).get("entry"), timeout=30, what="demo readings")
        assert demo[0]["resource"]["subject"] == {"reference": "Patient/demo-patient-1"}
        # The first demo start also replays a simulated week of every device class.
        for code in ("29463-7", "2708-6", "15074-8", "8310-5"):
            wait_for(lambda c=code: up.get(  # type: ignore[misc]
                f"/fhir/r4/Observation?subject=Patient/demo-astrid&code=http://loinc.org|{c}"
                "&_count=1", token).get("entry"), timeout=60, what=f"demo week {code}")
        # A technician onboards a cuff while the system runs; the cuff publishes by itself.
        device = json.loads(_cli(home, "device", "onboard", "--principal", "20",
                                 "--model", "test-cuff", "--serial", "T-1"))
        _cli(home, "device", "assign", device["device_id"], "--patient", "new-patient",
             "--basis", "HSL")
        cuff = Hub(f"mqtt://127.0.0.1:{up.mqtt_port}", device["client_id"],
                   username=device["mqtt_username"], password=device["mqtt_password"])
        cuff.connect()
        try:
            cuff.publish(device["device_id"], "ble/2a35", encode(BpReading(
                systolic=Decimal(141), diastolic=Decimal(91), mean=Decimal(108),
                pulse=Decimal(77))))
        finally:
            cuff.close()
        published = time.monotonic()
        own_token = _cli(home, "token", "--principal", "20", "--role", "clinician")
        entries = wait_for(lambda: up.get("/fhir/r4/Observation?subject=Patient/new-patient",
                                          own_token).get("entry"), what="the new reading")
        print(f"published to queryable: {time.monotonic() - published:.3f} s")
        # One reading: the blood-pressure panel (three components) and the pulse rate.
        quantities = [c["valueQuantity"] for e in entries
                      for c in e["resource"].get("component", [])]
        quantities += [e["resource"]["valueQuantity"] for e in entries
                       if "valueQuantity" in e["resource"]]
        assert sorted(q["value"] for q in quantities) == [77, 91, 108, 141]
    finally:
        assert up.stop(signal.SIGINT) == 0, up.out.read_text()
    assert "stopping aidlink" in up.out.read_text()
    assert _servers_of(home) == []
    assert not (home / "runtime.json").exists()

    again = Up(home)
    try:
        token = _cli(home, "token", "--principal", "20", "--role", "clinician")
        kept = again.get("/fhir/r4/Observation?subject=Patient/new-patient", token)
        assert len(kept["entry"]) == 2
        assert "applied migration" not in again.out.read_text()
    finally:
        assert again.stop(signal.SIGTERM) == 0, again.out.read_text()
    assert _servers_of(home) == []


def test_up_with_the_in_process_broker(home: Path) -> None:
    up = Up(home, "--broker", "inprocess")
    try:
        token = up.token()
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        entries = wait_for(lambda: up.get(
            f"/fhir/r4/Observation?subject=Patient/demo-patient-2&date=ge{since}", token
        ).get("entry"), timeout=30, what="demo readings over the in-process broker")
        assert {e["resource"]["code"]["coding"][1]["code"] for e in entries} <= {
            "85354-9", "8867-4"}
        assert "in-process MQTT 3.1.1 broker" in up.out.read_text()
    finally:
        assert up.stop(signal.SIGINT) == 0, up.out.read_text()
    assert _servers_of(home) == []
