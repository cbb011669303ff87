"""End-to-end helper for the issue 8 device classes: a simulated device's readings go through
a real Mosquitto, the gateway and PostgreSQL, and come back from the FHIR API, checked as
FHIR R4 (fhir.resources R4B models, as tests/fhir_support.py does). Also reads the classes'
sections of docs/DEVICE_DOCUMENTS.md, whose schemas and examples must match the adapters."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from fhir.resources.R4B.bundle import Bundle

from adapters.model import Event, Observation
from adapters.registry import decode
from gateway import db
from provisioning import service
from simulators.devices_base import Device
from simulators.hub import Hub
from tests.support import SECRET, api_client, bearer, running_gateway, wait_for

DOC = Path(__file__).resolve().parent.parent / "docs" / "DEVICE_DOCUMENTS.md"
PATIENT = "patient-home-test"


@dataclass
class Delivered:
    """What a run delivered and what the API answered."""

    device_id: str
    payloads: list[tuple[str, bytes]]
    observations: list[Observation]
    events: list[Event]
    bundle: dict[str, Any]
    stored_events: list[tuple[str, dict[str, Any]]]
    api_items: list[dict[str, Any]]


def _register(url: str, model: str) -> tuple[str, str]:
    db.migrate(url)
    with psycopg.connect(url) as conn:
        service.add_principal(conn, "20", "Region Dalarna", "password")
        hub = service.onboard_device(conn, principal="20", model="sim-hub", serial="H-home",
                                     actor="test")["device_id"]
        device = service.onboard_device(conn, principal="20", model=model, serial="D-home",
                                        actor="test")["device_id"]
        service.pair(conn, peripheral_id=device, hub_id=hub, actor="test")
        service.assign(conn, SECRET, device_id=device, patient=PATIENT, basis="HSL",
                       actor="test")
        conn.execute("UPDATE assignments SET valid_from = now() - interval '30 days'")
    return hub, device


def run(url: str, mqtt_url: str, *, model: str, device_cls: type[Device], readings: int,
        every: timedelta = timedelta(hours=12), seed: int = 7) -> Delivered:
    """Onboard a ``model`` device behind a hub, publish ``readings`` rounds of the simulator,
    wait until the gateway stored them all, and read them back (FHIR and /v1)."""
    hub_id, device_id = _register(url, model)
    start = datetime.now(UTC).replace(microsecond=0) - every * readings
    device = device_cls(device_id, start=start, seed=seed)
    payloads = [item for n in range(1, readings + 1)
                for item in device.readings(start + every * n)]
    records = [r for channel, payload in payloads for r in decode(channel, payload)]
    observations = [r for r in records if isinstance(r, Observation)]
    events = [r for r in records if isinstance(r, Event)]
    with running_gateway(url, mqtt_url):
        hub = Hub(mqtt_url, hub_id)
        hub.connect()
        try:
            for channel, payload in payloads:
                hub.publish(device_id, channel, payload)
            wait_for(lambda: _stored(url, device_id) >= (len(observations), len(events)),
                     timeout=30, what=f"{len(observations)} observations, {len(events)} events")
        finally:
            hub.close()
    with psycopg.connect(url) as conn:
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
        stored_events = [(str(t), dict(d)) for t, d in conn.execute(
            "SELECT type, data FROM events WHERE device_id = %s ORDER BY occurred_at",
            (device_id,))]
    assert dead == (0,)
    with api_client(url) as client:
        response = client.get("/fhir/r4/Observation", headers=bearer("20"),
                              params={"subject": f"Patient/{PATIENT}", "_count": 200})
        assert response.status_code == 200, response.text
        bundle: dict[str, Any] = response.json()
        Bundle.model_validate(bundle)
        items = client.get("/v1/observations", headers=bearer("20"),
                           params={"patient": PATIENT, "limit": 500})
        assert items.status_code == 200, items.text
    return Delivered(device_id, payloads, observations, events, bundle, stored_events,
                     items.json()["items"])


def _stored(url: str, device_id: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        obs = conn.execute("SELECT count(*) FROM observations WHERE device_id = %s",
                           (device_id,)).fetchone()
        events = conn.execute("SELECT count(*) FROM events WHERE device_id = %s",
                              (device_id,)).fetchone()
    assert obs is not None and events is not None
    return int(obs[0]), int(events[0])


def resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The resources of a searchset Bundle."""
    return [entry["resource"] for entry in bundle.get("entry", [])]


def documented_schema(channel: str) -> dict[str, Any]:
    """The JSON Schema printed for ``channel`` in docs/DEVICE_DOCUMENTS.md."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"<!-- schema: {channel} -->\n```json\n(.*?)\n```", text, re.DOTALL)
    assert match, f"no schema block for {channel} in {DOC.name}"
    found: dict[str, Any] = json.loads(match.group(1))
    return found


def documented_example(channel: str) -> tuple[bytes, list[str]]:
    """The example document of ``channel``'s section and the canonical lines it shows."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"## \d+\. `{channel}`.*?Example document:\n\n```json\n(.*?)\n```\n\n"
                      r"decodes to\n\n```json\n(.*?)\n```", text, re.DOTALL)
    assert match, f"no example for {channel} in {DOC.name}"
    return match.group(1).encode(), match.group(2).splitlines()
