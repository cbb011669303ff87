"""The technician console's device actions through its forms, in-process over a real
PostgreSQL: onboarding (its refusals and pilot rules), assigning, returning and
reconditioning, the wipe followed from request to broker to confirmation, and the bulk
upload with its one-time credentials."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import psycopg
import pytest
from fastapi.testclient import TestClient

from gateway.renewal_thread import RenewalLoop
from gateway.services.mosquitto import MosquittoProcess
from provisioning import lifecycle, pilots
from tests import console_support
from tests.console_support import PASSPHRASE, logged_in
from tests.support import count, wait_for

# The console's shared fixtures, which pytest finds under these names in this module.
fleet = console_support.fleet
app_client = console_support.app_client


def test_onboard_assign_return_recondition_through_the_forms(
        app_client: TestClient, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDLINK_DEVICE_BROKER_URL", "mqtts://mqtt.example.se:8883")
    csrf = logged_in(app_client, database_url)
    made = app_client.post("/console/onboard?lang=en", data={
        "csrf": csrf, "model": "bpm", "serial": "CONSOLE-1", "firmware": "1.2"})
    assert made.status_code == 200, made.text
    device = re.search(r'id="device-id">(dev-[0-9a-f]+)<', made.text)
    assert device and 'id="mqtt-password">' in made.text
    # What the device is configured with besides its password: where to connect and publish.
    assert 'id="mqtt-url">mqtts://mqtt.example.se:8883<' in made.text
    client_id = re.search(r'id="mqtt-username">([^<]+)<', made.text)
    assert client_id and f'id="topic-prefix">aidlink/v1/{client_id.group(1)}/<' in made.text
    base = f"/console/devices/{device.group(1)}"
    refused = app_client.post(f"{base}/assign?lang=en", data={"csrf": csrf, "basis": "HSL"})
    assert refused.status_code == 422
    assert 'id="f-assign-patient-error">This field is required.' in refused.text
    steps = [("assign", {"patient": "p-console", "basis": "SoL"}, "Assigned"),
             ("return", {"reason": "patient moved"}, "Returned"),
             ("recondition", {"reason": "back from patient"}, "Reconditioning")]
    for action, data, state in steps:
        answer = app_client.post(f"{base}/{action}", data={"csrf": csrf, **data})
        if action != "recondition":
            # Post/redirect/get, so a reload does not repeat the action.
            assert answer.status_code == 303, answer.text
            assert answer.headers["location"] == f"{base}?done={action}"
            answer = app_client.get(answer.headers["location"] + "&lang=en")
            assert f"The device is {'assigned' if action == 'assign' else 'taken back'}." \
                in answer.text
        else:
            assert answer.status_code == 200, answer.text
        assert f'id="device-state">{state}<' in answer.text
    assert f"aidlink/v1/{device.group(1)}/down/wipe" in answer.text
    history = answer.text[answer.text.index('<table id="history">'):]
    assert [a for a in ("onboarded", "assigned", "returned", "reconditioning_started")
            if a in history] == ["onboarded", "assigned", "returned", "reconditioning_started"]
    again = app_client.post(f"{base}/return?lang=en", data={"csrf": csrf, "reason": "x"})
    assert again.status_code == 409 and "only a device assigned" in again.text


def wipe_shown(client: TestClient, base: str) -> str:
    page = client.get(f"{base}?lang=en")
    assert page.status_code == 200, page.text
    found = re.search(r'<dd id="wipe-state">([^<]*)</dd>', page.text)
    assert found, "the device page shows no wipe state"
    return found.group(1)


def test_the_device_page_follows_the_wipe_from_request_to_broker_to_confirmation(
        app_client: TestClient, database_url: str, mosquitto: MosquittoProcess) -> None:
    csrf = logged_in(app_client, database_url)
    made = app_client.post("/console/onboard", data={"csrf": csrf, "model": "bpm",
                                                     "serial": "WIPE-1"})
    device = re.search(r'id="device-id">(dev-[0-9a-f]+)<', made.text)
    assert device, made.text
    base = f"/console/devices/{device.group(1)}"
    assert 'id="wipe-state"' not in app_client.get(base).text
    for action, data in (("assign", {"patient": "p-wipe", "basis": "SoL"}),
                         ("return", {"reason": "back"}), ("recondition", {"reason": "reuse"})):
        answer = app_client.post(f"{base}/{action}?lang=en", data={"csrf": csrf, **data})
        assert answer.status_code in (200, 303), answer.text
    assert "the device keeps its credentials until it confirms the wipe" in answer.text
    with psycopg.connect(database_url) as conn:
        nonce, password = conn.execute(
            "SELECT w.nonce, d.mqtt_password_hash IS NOT NULL FROM wipe_requests w"
            " JOIN devices d ON d.id = w.device_id WHERE w.device_id = %s",
            (device.group(1),)).fetchone() or (None, None)
    # Starting reconditioning revoked nothing: the device needs its login to get the wipe.
    assert nonce and password is True
    requested = wipe_shown(app_client, base)
    assert requested.startswith("Requested ") and "next downlink round" in requested
    # The nonce was shown once, with the command; a later page does not show it.
    assert nonce not in app_client.get(f"{base}?lang=en").text
    loop = RenewalLoop(database_url, mosquitto.url, PASSPHRASE, interval_s=3600)
    loop.start()
    try:
        wait_for(lambda: loop.rounds, 15, "the first downlink round")
    finally:
        loop.stop()
    assert [w["published"] for w in loop.last_wipes] == [True]
    published = wipe_shown(app_client, base)
    assert published.startswith("The command has been held by the MQTT broker since ")
    with psycopg.connect(database_url) as conn:
        lifecycle.confirm_wipe(conn, device_id=device.group(1), nonce=nonce,
                               confirmed_at=datetime(2026, 11, 20, 9, 15, tzinfo=UTC),
                               actor="technician")
    confirmed = wipe_shown(app_client, base)
    assert confirmed.startswith("Confirmed: the device was wiped 2026-11-20")
    assert confirmed.endswith("its credentials are revoked")


def test_onboarding_refusals_are_shown_beside_the_form(app_client: TestClient,
                                                       database_url: str) -> None:
    csrf = logged_in(app_client, database_url)
    first = app_client.post("/console/onboard", data={"csrf": csrf, "model": "bpm",
                                                      "serial": "DUP-1"})
    assert first.status_code == 200
    second = app_client.post("/console/onboard", data={"csrf": csrf, "model": "bpm",
                                                       "serial": "DUP-1"})
    assert second.status_code == 409 and "already onboarded" in second.text
    missing = app_client.post("/console/onboard", data={"csrf": csrf, "model": "bpm"})
    assert missing.status_code == 422 and 'aria-invalid="true"' in missing.text


def test_a_unit_limited_pilot_is_met_through_the_onboarding_forms_unit(
        app_client: TestClient, database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        pilots.set_pilot(conn, "bpm", units=["Hemsjukvården Falun"], actor="test")
    csrf = logged_in(app_client, database_url)
    outside = app_client.post("/console/onboard?lang=en", data={
        "csrf": csrf, "model": "bpm", "serial": "PILOT-1", "unit": "Vårdcentralen Mora"})
    inside = app_client.post("/console/onboard?lang=en", data={
        "csrf": csrf, "model": "bpm", "serial": "PILOT-2", "unit": "Hemsjukvården Falun"})
    assert outside.status_code == 422 and "pilot rule" in outside.text, outside.text
    assert inside.status_code == 200 and 'id="device-id">dev-' in inside.text, inside.text


def test_bulk_upload_shows_progress_and_hands_out_credentials_once(
        app_client: TestClient, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Read per request, as the API's bulk route reads it; its user and password never go out.
    monkeypatch.setenv("AIDLINK_DEVICE_BROKER_URL", "mqtts://ops:pw@mqtt.example.se:8883")
    csrf = logged_in(app_client, database_url)
    text = "principal,model,serial\n20,bpm,BULK-1\n20,bpm,BULK-2\n2080,bpm,BULK-3\n20,,BULK-4\n"
    answer = app_client.post("/console/bulk", data={"csrf": csrf},
                             files={"file": ("fleet.csv", text.encode(), "text/csv")})
    assert answer.status_code == 303, answer.text
    job = answer.headers["location"]

    def finished() -> str | None:
        page = app_client.get(job + "?lang=en")
        assert page.status_code == 200
        return page.text if 'id="bulk-result"' in page.text else None

    page = wait_for(finished, what="the bulk job to finish")
    assert "Done: 2 onboarded, 2 refused of 4 rows." in page
    assert "may not onboard devices for principal 2080" in page
    download = app_client.post(job + "/credentials", data={"csrf": csrf})
    assert download.status_code == 200
    assert sorted(row["serial"] for row in download.json()) == ["BULK-1", "BULK-2"]
    assert all(row["mqtt_password"] for row in download.json())
    assert {row["mqtt_url"] for row in download.json()} == {"mqtts://mqtt.example.se:8883"}
    assert all(row["topic_prefix"] == f"aidlink/v1/{row['client_id']}/"
               for row in download.json())
    assert app_client.post(job + "/credentials", data={"csrf": csrf}).status_code == 409
    # Another client's session does not see the job at all.
    other = TestClient(app_client.app, follow_redirects=False)
    logged_in(other, database_url)
    assert other.get(job).status_code == 404


def test_bulk_upload_onboards_nothing_while_the_device_broker_setting_is_wrong(
        app_client: TestClient, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDLINK_DEVICE_BROKER_URL", "http://mqtt.example.se")
    csrf = logged_in(app_client, database_url)
    answer = app_client.post("/console/bulk?lang=en", data={"csrf": csrf}, files={
        "file": ("fleet.csv", b"principal,model,serial\n20,bpm,BAD-1\n", "text/csv")})
    assert answer.status_code == 503
    assert "AIDLINK_DEVICE_BROKER_URL" in answer.text
    assert count(database_url, "SELECT count(*) FROM devices WHERE serial = 'BAD-1'") == 0
