"""Credential changes made through the API and the CLI reach the running broker at once."""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

from click.testing import CliRunner
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.auth import Role
from gateway.cli import main
from tests.broker_site import (
    ACCEPTED,
    PASSPHRASE,
    TLS_REFUSED,
    Session,
    Site,
    running_broker,
)
from tests.support import SECRET, bearer, wait_for


def _reloads(site: Site) -> int:
    return site.log().count("Reloading config.")


def _denied(site: Site, device: str) -> bool:
    return f"user {device}\ntopic deny aidlink/v1/#\n" in (site.out / "acl").read_text()


def test_an_api_revocation_cuts_an_open_session_and_a_reissue_lets_the_device_back(
        site: Site, database_url: str) -> None:
    a1, a2 = site.devices["a1"], site.devices["a2"]
    app = create_app(database_url=database_url, secret=SECRET, ca_passphrase=PASSPHRASE,
                     broker_dir=site.out)
    headers = bearer("20", Role.TECHNICIAN)
    with running_broker(site), ExitStack() as stack, TestClient(app) as api:
        kept = Session(site.ports["mtls"], a1, context=site.context("a1"))
        stack.callback(kept.close)
        victim = Session(site.ports["mtls"], a2, context=site.context("a2"))
        stack.callback(victim.close)
        before = _reloads(site)
        revoked = api.post(f"/v1/devices/{a2}/revoke", headers=headers,
                           json={"reason": "key_compromise"})
        # The pid file written by the broker is how the API finds the process to reload.
        wait_for(lambda: _reloads(site) > before, 5, "the broker to reload")
        denied_after_revoke = _denied(site, a2)
        victim.client.publish(f"aidlink/v1/{a2}/{a2}/status", b"after revocation", qos=1)
        wait_for(lambda: victim.drops, 5, "the broker to close a2's session")
        kept.publish(f"aidlink/v1/{a1}/{a1}/status", b"still here")
        kept_up = (kept.client.is_connected(), kept.drops)
        reissued = api.post(f"/v1/devices/{a2}/reissue", headers=headers)
        body: dict[str, Any] = reissued.json()
        files = site.out.parent / "devices"
        (files / "a2-new.key").write_text(body["private_key_pem"])
        (files / "a2-new.chain.pem").write_text(body["certificate_pem"] + body["ca_chain_pem"])
        back = site.probe("mtls", site.context("a2-new"), a2)
        old = site.probe("mtls", site.context("a2"), a2)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["broker"]["reloaded"] is True
    assert revoked.json()["broker"]["denied_clients"] == 1
    assert denied_after_revoke
    assert kept_up == (True, 0)
    assert reissued.status_code == 200, reissued.text
    assert body["broker"]["denied_clients"] == 0
    assert not _denied(site, a2)
    assert (back, old) == (ACCEPTED, TLS_REFUSED)


def test_a_cli_retirement_refreshes_the_broker_named_in_the_settings(
        site: Site, database_url: str) -> None:
    b1 = site.devices["b1"]
    env = {"AIDLINK_DATABASE_URL": database_url, "AIDLINK_SECRET": SECRET.decode(),
           "AIDLINK_CA_PASSPHRASE": PASSPHRASE.decode(), "AIDLINK_BROKER_DIR": str(site.out)}
    with running_broker(site):
        before = _reloads(site)
        result = CliRunner().invoke(main, ["device", "retire", b1, "--reason", "broken"],
                                    env=env)
        wait_for(lambda: _reloads(site) > before, 5, "the broker to reload")
        refused = site.probe("mtls", site.context("b1"), b1)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["broker"] == {
        "crls": 4, "password_users": 2, "denied_clients": 1, "reloaded": True}
    assert _denied(site, b1)
    assert refused == TLS_REFUSED


def test_a_password_device_onboarded_through_the_api_connects_at_once(
        site: Site, database_url: str) -> None:
    app = create_app(database_url=database_url, secret=SECRET, ca_passphrase=PASSPHRASE,
                     broker_dir=site.out)
    with running_broker(site), TestClient(app) as api:
        before = _reloads(site)
        made = api.post("/v1/devices", headers=bearer("2021", Role.TECHNICIAN),
                        json={"principal": "2021", "model": "sim-hub", "serial": "p-new"})
        body: dict[str, Any] = made.json()
        wait_for(lambda: _reloads(site) > before, 5, "the broker to reload")
        device = body.get("client_id", "")
        answer = site.probe("password", site.context(), device, device,
                            body.get("mqtt_password", ""))
    assert made.status_code == 201, made.text
    assert answer == ACCEPTED


def test_password_devices_onboarded_in_bulk_through_the_api_connect_at_once(
        site: Site, database_url: str) -> None:
    app = create_app(database_url=database_url, secret=SECRET, ca_passphrase=PASSPHRASE,
                     broker_dir=site.out)
    with running_broker(site), TestClient(app) as api:
        before = _reloads(site)
        made = api.post("/v1/devices/bulk", headers={**bearer("2021", Role.TECHNICIAN),
                                                     "Content-Type": "text/csv"},
                        content="principal,model,serial\n2021,sim-hub,p-bulk-1\n")
        body: dict[str, Any] = made.json()
        wait_for(lambda: _reloads(site) > before, 5, "the broker to reload")
        row = body["onboarded"][0]
        answer = site.probe("password", site.context(), row["client_id"], row["client_id"],
                            row["mqtt_password"])
    assert made.status_code == 200, made.text
    assert answer == ACCEPTED
