"""The console end to end in headless Chromium (Debian's ``chromium``, driven by Playwright):
log in by keyboard, onboard a device, assign it, let the device publish a reading with its
own credentials through a password-checking Mosquitto into a running gateway, see the reading
on the device page, take it back and recondition it. Screenshots go to
``test-artifacts/console/`` for CI to keep.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from gateway.api.app import create_app
from gateway.auth import Role
from gateway.services.mosquitto import MosquittoProcess, find_mosquitto
from provisioning import api_clients, broker_config
from provisioning.passwords import hash_password
from simulators.bpm import BpReading, encode
from simulators.hub import Hub
from tests.conftest import missing_component
from tests.support import SECRET, count, running_gateway, seed, served, wait_for

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
PASSPHRASE = b"console-e2e-ca-passphrase-0123456789"
GATEWAY_PASSWORD = "console-e2e-gateway-password"
# Nothing leaves the machine: no first-run pages, updates, sync or QUIC probes.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 15_000


@dataclass(frozen=True)
class Site:
    """A running console over a real gateway, broker and database."""

    base: str
    database_url: str
    broker: MosquittoProcess
    broker_dir: Path
    client_id: str
    secret: str


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Iterator[Site]:
    if not CHROMIUM.exists():
        missing_component("chromium (Debian package) not installed: apt-get install chromium")
    if find_mosquitto() is None:
        missing_component("mosquitto not installed: apt-get install mosquitto")
    seed(database_url)  # principal 20 gives its devices MQTT passwords
    out = tmp_path / "broker"
    out.mkdir()
    # The broker's files as `aidlink broker-config` keeps them: the gateway's password, then
    # every device's, the ACL and CRLs, rewritten by each credential change.
    (out / broker_config.PASSWORDS).write_text(
        f"{broker_config.GATEWAY_USER}:{hash_password(GATEWAY_PASSWORD)}\n")
    with psycopg.connect(database_url) as conn:
        broker_config.refresh_credentials(conn, PASSPHRASE, out)
        client, secret = api_clients.add_client(
            conn, principal="20", role=Role.ADMIN, actor="test", name="e2e admin",
            scopes=["observations", "events", "devices", "provisioning", "audit"])
    broker = MosquittoProcess(data_dir=tmp_path / "mosquitto", allow_anonymous=False,
                              password_file=out / broker_config.PASSWORDS,
                              acl_file=out / broker_config.ACL)
    broker.start()
    try:
        # Where the API finds the broker to reload after revoking credentials.
        (out / broker_config.PID_FILE).write_text(f"{broker.pid}\n")
        gateway_url = (f"mqtt://{broker_config.GATEWAY_USER}:{GATEWAY_PASSWORD}"
                       f"@{broker.host}:{broker.port}")
        app = create_app(database_url=database_url, secret=SECRET, ca_passphrase=PASSPHRASE,
                         broker_dir=out, rate_limit=None)
        with running_gateway(database_url, gateway_url), served(app) as base:
            yield Site(base, database_url, broker, out, str(client["client_id"]), secret)
    finally:
        broker.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, locale="en-GB", viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def tab_to(page: Page, element_id: str, limit: int = 30) -> None:
    """Press Tab until the element has focus, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} not reached with {limit} presses of Tab")


def keyboard_login(page: Page, site: Site) -> None:
    page.goto(f"{site.base}/console/login?lang=en")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    shot(page, "01-login")
    # The first stop is the skip link, shown when focused.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    expect(page.locator("a.skip")).to_be_visible()
    tab_to(page, "f-client_id")
    page.keyboard.type(site.client_id)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "f-client_secret"
    page.keyboard.type(site.secret)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{site.base}/console/")


def reading(at: datetime) -> bytes:
    return encode(BpReading(systolic=Decimal(131), diastolic=Decimal(84), mean=Decimal("99.7"),
                            pulse=Decimal(66), measured_at=at))


def test_log_in_onboard_see_a_reading_arrive_and_recondition(site: Site,
                                                              browser: BrowserContext) -> None:
    page = browser.new_page()
    keyboard_login(page, site)
    expect(page.get_by_role("heading", level=1)).to_have_text("Devices")
    shot(page, "02-fleet")

    page.get_by_role("link", name="Onboard device").click()
    page.get_by_label("Model", exact=True).fill("bpm")
    page.get_by_label("Serial", exact=True).fill("E2E-0001")
    page.get_by_label("Firmware version (optional)").fill("2.1")
    page.get_by_role("button", name="Onboard").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("is onboarded")
    device = page.locator("#device-id").inner_text()
    password = page.locator("#mqtt-password").inner_text()
    assert re.fullmatch(r"dev-[0-9a-f]+", device) and password
    shot(page, "03-onboarded")
    with psycopg.connect(site.database_url) as conn:
        # Onboarding leaves the broker's files alone (as POST /v1/devices does); the
        # deployment's refresh (`aidlink broker-config`, hourly under `aidlink up`) adds
        # the new device's password, done here at once.
        broker_config.refresh_credentials(conn, PASSPHRASE, site.broker_dir,
                                          broker_pid=site.broker.pid)

    page.get_by_role("link", name="Open the device page").click()
    page.get_by_label("Patient reference").fill("e2e-patient-1")
    page.get_by_label("Legal basis").select_option("HSL")
    page.get_by_role("button", name="Assign to patient").click()
    expect(page.locator("#device-state")).to_have_text("Assigned")
    expect(page.get_by_text("No readings in the last 30 days.")).to_be_visible()

    # Measured after the assignment began (the device's clock has whole seconds), so the
    # reading is the patient's and showing it is a logged read of patient data.
    time.sleep(1.1)
    measured = datetime.now(UTC).replace(microsecond=0)
    hub = wait_for(lambda: _connected(site, device, password), timeout=15,
                   what=f"device {device} to connect with its password")
    try:
        hub.publish(device, "ble/2a35", reading(measured))
    finally:
        hub.close()
    wait_for(lambda: count(site.database_url, "SELECT count(*) FROM observations"
                           " WHERE device_id = %s", device) == 4, what="the reading stored")
    page.reload()
    table = page.locator("#readings")
    expect(table).to_contain_text("Systolic blood pressure")
    expect(table).to_contain_text("131")
    expect(page.locator("svg.plot polyline")).to_have_count(4)
    shot(page, "04-device-with-reading")
    assert count(site.database_url, "SELECT count(*) FROM access_log WHERE client = %s"
                 " AND action = 'observations.read'", site.client_id) >= 1

    page.get_by_label("Reason", exact=True).fill("patient moved")
    page.get_by_role("button", name="Take back").click()
    expect(page.locator("#device-state")).to_have_text("Returned")
    page.get_by_label("Reason", exact=True).fill("back from patient")
    page.get_by_role("button", name="Recondition").click()
    expect(page.locator("#device-state")).to_have_text("Reconditioning")
    expect(page.get_by_role("status")).to_contain_text(f"aidlink/v1/{device}/down/wipe")
    expect(page.locator("#history")).to_contain_text("reconditioning_started")
    shot(page, "05-reconditioning")
    # The device keeps its password until it confirms the wipe (it must be able to fetch
    # the wipe); the command waits in the database for the downlink loop.
    assert f"{device}:" in (site.broker_dir / broker_config.PASSWORDS).read_text()
    assert count(site.database_url, "SELECT count(*) FROM wipe_requests"
                 " WHERE device_id = %s AND confirmed_at IS NULL", device) == 1

    page.get_by_role("link", name="Svenska").click()
    expect(page.locator("html")).to_have_attribute("lang", "sv")
    expect(page.locator("#device-state")).to_have_text("Rekonditioneras")
    shot(page, "06-device-in-swedish")


def _connected(site: Site, device: str, password: str) -> Hub | None:
    """The device's MQTT connection with its own credentials, once the broker accepts them."""
    hub = Hub(site.broker.url, device, username=device, password=password)
    try:
        hub.connect(timeout=2)
    except Exception:
        return None
    return hub

