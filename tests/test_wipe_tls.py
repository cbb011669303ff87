"""Reconditioning on a broker that enforces credentials (TLS, CRL, ACL by ``aidlink
broker-config``): the device, offline when reconditioning starts, still receives its retained
wipe and confirms it through the gateway; only then are its credentials revoked, and after
the broker sync (by hand, or by the downlink schedule with nobody calling anything) it is shut
out while another device's session stays up."""

from __future__ import annotations

import json
import threading
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.auth import Role
from gateway.renewal_thread import RenewalLoop
from provisioning import lifecycle, service
from provisioning.broker_config import GATEWAY_USER
from tests.broker_site import (
    ACCEPTED,
    GATEWAY_PASSWORD,
    HOST,
    PASSPHRASE,
    TLS_REFUSED,
    Session,
    Site,
    running_broker,
)
from tests.support import SECRET, bearer, running_gateway, wait_for


def _denied(site: Site, device: str) -> bool:
    return f"user {device}\ntopic deny aidlink/v1/#\n" in (site.out / "acl").read_text()


def _request(url: str, device: str) -> tuple[bool, bool, str | None]:
    """(published, cleared, confirmed by) of the device's wipe request."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT published_at IS NOT NULL, cleared_at IS NOT NULL,"
                           " confirmed_by FROM wipe_requests WHERE device_id = %s",
                           (device,)).fetchone()
    assert row is not None
    return bool(row[0]), bool(row[1]), row[2]


def _certificates(site: Site, device: str) -> list[str | None]:
    return [row[0] for row in site.conn.execute(
        "SELECT revocation_reason FROM certificates WHERE device_id = %s", (device,))]


def _reloads(site: Site) -> int:
    return site.log().count("Reloading config.")


@pytest.mark.parametrize("synced_by", ["hand", "downlink"])
def test_a_certificate_device_gets_its_retained_wipe_and_is_shut_out_after_confirming(
        site: Site, database_url: str, synced_by: str) -> None:
    a1, a2 = site.devices["a1"], site.devices["a2"]
    service.assign(site.conn, SECRET, device_id=a1, patient="p-1", basis="HSL", actor="test")
    lifecycle.return_device(site.conn, device_id=a1, actor="test", reason="patient moved")
    gateway_url = f"mqtt://{GATEWAY_USER}:{GATEWAY_PASSWORD}@{HOST}:{site.ports['plain']}"
    app = create_app(database_url=database_url, secret=SECRET, ca_passphrase=PASSPHRASE,
                     broker_dir=site.out)
    if synced_by == "downlink":
        # Wipe rounds every half second, refreshing the broker directory after a removal.
        loop = RenewalLoop(database_url, gateway_url, PASSPHRASE, interval_s=3600,
                           downlink_interval_s=0.5, broker_dir=site.out)
    else:
        loop = RenewalLoop(database_url, gateway_url, PASSPHRASE, interval_s=3600)
    with (running_broker(site), ExitStack() as stack, TestClient(app) as api,
          running_gateway(database_url, gateway_url)):
        kept = Session(site.ports["mtls"], a2, context=site.context("a2"))
        stack.callback(kept.close)
        assert kept.subscribe(f"aidlink/v1/{a2}/down/#") == [1]
        # a1 is offline: reconditioning starts through the API, which publishes nothing.
        started = api.post(f"/v1/devices/{a1}/recondition", headers=bearer("20", Role.TECHNICIAN),
                           json={"reason": "back from patient"})
        assert started.status_code == 200, started.text
        command = started.json()
        still_allowed = not _denied(site, a1)
        loop.start()
        stack.callback(loop.stop)
        wait_for(lambda: _request(database_url, a1)[0] or None, 15, "the published wipe")
        device = Session(site.ports["mtls"], a1, context=site.context("a1"))
        stack.callback(device.close)
        assert device.subscribe(f"aidlink/v1/{a1}/down/#") == [1]
        wait_for(lambda: device.messages, 5, "the retained wipe at a1")
        received = list(device.messages)
        nonce = json.loads(received[0][1])["nonce"]
        reloads = _reloads(site)
        device.publish(f"aidlink/v1/{a1}/{a1}/wipe", json.dumps({
            "v": 1, "type": "wipe_done", "nonce": nonce,
            "at": datetime.now(UTC).isoformat()}).encode())
        wait_for(lambda: _request(database_url, a1)[2], 10, "the recorded confirmation")
        revoked = _certificates(site, a1)
        if synced_by == "downlink":
            wait_for(lambda: _reloads(site) > reloads, 10, "the broker reload by the downlink")
        else:
            site.refresh()
        synced = loop.last_broker
        refused = site.probe("mtls", site.context("a1"), a1)
        # Its session opened before the reload survives the CRL, but the ACL denies it.
        device.client.publish(f"aidlink/v1/{a1}/{a1}/status", b"after the wipe", qos=1)
        wait_for(lambda: device.drops, 5, "the broker to close a1's session")
        kept.publish(f"aidlink/v1/{a2}/{a2}/status", b"still here")
        kept_up = (kept.client.is_connected(), kept.drops)
        # Another device than a2: a connection under a2's client id would take its session over.
        other = site.probe("mtls", site.context("b1"), site.devices["b1"])
        loop.run_once()
        checker = Session(site.ports["plain"], "wipe-checker", username=GATEWAY_USER,
                          password=GATEWAY_PASSWORD)
        stack.callback(checker.close)
        assert checker.subscribe(command["topic"]) == [1]
        threading.Event().wait(1)
        left_on_broker = list(checker.messages)
    assert still_allowed
    assert received == [(command["topic"], command["payload"].encode())]
    assert command["topic"] == f"aidlink/v1/{a1}/down/wipe"
    assert revoked == ["superseded"]
    assert _request(database_url, a1) == (True, True, "gateway")
    assert _denied(site, a1) and not _denied(site, a2)
    assert (refused, other) == (TLS_REFUSED, ACCEPTED)
    if synced_by == "downlink":
        assert synced is not None and synced["reloaded"] is True
    else:
        assert synced is None
    assert kept_up == (True, 0)
    assert left_on_broker == []
    actions: list[tuple[Any, ...]] = [(row["action"], row["actor"])
                                      for row in service.history(site.conn, a1)]
    assert ("credentials_revoked", "gateway") in actions
    assert actions.index(("wipe_confirmed", "gateway")) < actions.index(
        ("credentials_revoked", "gateway"))
