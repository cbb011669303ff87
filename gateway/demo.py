"""The demo: Dalarna's principals and a small simulated fleet (DESIGN.md reference data)."""

from __future__ import annotations

import json
import logging
import secrets
import threading
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from provisioning import service
from provisioning.errors import ConflictError, NotFoundError
from simulators.bpm import payload_source
from simulators.hub import Hub, HubError, run_fleet

log = logging.getLogger(__name__)

DALARNA = (
    ("20", "Region Dalarna"), ("2021", "Vansbro"), ("2023", "Malung-Sälen"),
    ("2026", "Gagnef"), ("2029", "Leksand"), ("2031", "Rättvik"), ("2034", "Orsa"),
    ("2039", "Älvdalen"), ("2061", "Smedjebacken"), ("2062", "Mora"), ("2080", "Falun"),
    ("2081", "Borlänge"), ("2082", "Säter"), ("2083", "Hedemora"), ("2084", "Avesta"),
    ("2085", "Ludvika"),
)
# The region lets devices log in with passwords in the demo so that `mosquitto_pub` works
# without certificates; every other principal keeps the default, mutual TLS.
PASSWORD_PRINCIPALS = {"20"}
# (principal, basis, patients): one hub per principal with one cuff per patient.
FLEET = (("20", "HSL", ("demo-patient-1", "demo-patient-2", "demo-patient-3")),
         ("2080", "SoL", ("demo-patient-9",)))
DEMO_FILE = "demo.json"
ACTOR = "demo"


@dataclass(frozen=True, slots=True)
class DemoHub:
    """A hub and its cuffs."""

    principal: str
    hub_id: str
    cuffs: tuple[tuple[str, str], ...]  # (device id, patient reference)


def seed(conn: psycopg.Connection[Any], secret: bytes, home: Path) -> list[DemoHub]:
    """Create the principals and the fleet once; a second start reuses them."""
    for code, name in DALARNA:
        with suppress(ConflictError):
            service.add_principal(conn, code, name,
                                  "password" if code in PASSWORD_PRINCIPALS else "mtls")
    conn.commit()
    saved = _load(home)
    if saved and _all_exist(conn, saved):
        return saved
    hubs = []
    for principal, basis, patients in FLEET:
        hub = service.onboard_device(conn, principal=principal, model="sim-hub",
                                     serial=f"hub-{principal}-{_token()}", actor=ACTOR)
        cuffs = []
        for patient in patients:
            cuff = service.onboard_device(conn, principal=principal, model="sim-bpm",
                                          serial=f"bpm-{principal}-{_token()}", actor=ACTOR)
            service.pair(conn, peripheral_id=cuff["device_id"], hub_id=hub["device_id"],
                         actor=ACTOR)
            service.assign(conn, secret, device_id=cuff["device_id"], patient=patient,
                           basis=basis, actor=ACTOR)
            cuffs.append((cuff["device_id"], patient))
        hubs.append(DemoHub(principal, hub["client_id"], tuple(cuffs)))
    conn.commit()
    (home / DEMO_FILE).write_text(json.dumps(
        [{"principal": h.principal, "hub_id": h.hub_id, "cuffs": h.cuffs} for h in hubs]))
    return hubs


def _token() -> str:
    return secrets.token_hex(3)


def _load(home: Path) -> list[DemoHub]:
    try:
        raw = json.loads((home / DEMO_FILE).read_text())
        return [DemoHub(h["principal"], h["hub_id"], tuple((c[0], c[1]) for c in h["cuffs"]))
                for h in raw]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return []


def _all_exist(conn: psycopg.Connection[Any], hubs: list[DemoHub]) -> bool:
    try:
        for hub in hubs:
            service.get_device(conn, hub.hub_id)
            for device_id, _ in hub.cuffs:
                service.get_device(conn, device_id)
    except NotFoundError:
        return False
    return True


def run(hubs: list[DemoHub], mqtt_url: str, protocol: int, stop: threading.Event,
        interval: float = 10.0) -> list[threading.Thread]:
    """Start one simulator thread per hub, publishing until ``stop`` is set."""
    threads = []
    for index, demo in enumerate(hubs):
        fleet = [(device_id, payload_source(index * 100 + offset))
                 for offset, (device_id, _) in enumerate(demo.cuffs)]
        thread = threading.Thread(target=_run_hub, name=f"demo-{demo.hub_id}", daemon=True,
                                  args=(demo.hub_id, fleet, mqtt_url, protocol, stop, interval))
        thread.start()
        threads.append(thread)
    return threads


def _run_hub(hub_id: str, fleet: list[Any], mqtt_url: str, protocol: int,
             stop: threading.Event, interval: float) -> None:
    hub = Hub(mqtt_url, hub_id, protocol=protocol)
    try:
        hub.connect()
        run_fleet(hub, fleet, count=0, interval=interval, stop=stop)
    except (HubError, OSError) as exc:
        log.error("demo hub %s stopped: %s", hub_id, exc)
    finally:
        hub.close()
