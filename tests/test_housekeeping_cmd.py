"""``aidlink housekeeping``: renewal and delivery, retention, and the broker's CRLs re-signed
before they lapse, on a real PostgreSQL and a Mosquitto running on broker-config's files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from cryptography import x509

from gateway import db
from gateway.cli import main
from gateway.housekeeping_thread import BrokerPidError, refresh_broker
from provisioning import downlink, lifecycle, policy, renewal, service
from provisioning.broker_config import CRL, GATEWAY_USER, PID_FILE, refresh_credentials
from provisioning.ca import ensure_authorities
from tests.broker_site import (
    ACCEPTED,
    GATEWAY_PASSWORD,
    PASSPHRASE,
    TLS_REFUSED,
    Session,
    Site,
    certify,
    running_broker,
)
from tests.support import SECRET, wait_for

AIDLINK = str(Path(sys.executable).parent / "aidlink")
CRL_END = "-----END X509 CRL-----"


def _crls(path: Path) -> dict[str, x509.CertificateRevocationList]:
    """The CRLs in a concatenated PEM file, by issuer."""
    blocks = [block + CRL_END for block in path.read_text().split(CRL_END) if block.strip()]
    crls = [x509.load_pem_x509_crl(block.encode()) for block in blocks]
    return {crl.issuer.rfc4514_string(): crl for crl in crls}


def _reloads(site: Site) -> int:
    return site.log().count("Reloading config.")


def _env(database_url: str, home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "AIDLINK_DATABASE_URL": database_url, "AIDLINK_HOME": str(home),
            "AIDLINK_CA_PASSPHRASE": PASSPHRASE.decode(), **extra}


def _site_env(site: Site, database_url: str, home: Path) -> dict[str, str]:
    url = f"mqtt://{GATEWAY_USER}:{GATEWAY_PASSWORD}@127.0.0.1:{site.ports['plain']}"
    return _env(database_url, home, AIDLINK_BROKER_DIR=str(site.out), AIDLINK_MQTT_URL=url)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AIDLINK, "housekeeping", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_one_round_resigns_the_crls_reloads_the_broker_and_delivers_renewals(
        site: Site, database_url: str, tmp_path: Path) -> None:
    # CRLs signed three days ago lapse in four: what a week without a refresh leads to.
    refresh_credentials(site.conn, PASSPHRASE, site.out,
                        now=datetime.now(UTC) - timedelta(days=3))
    before = _crls(site.out / CRL)
    # Issued 350 days ago under a 365-day lifetime: inside the 30-day renewal window.
    due = certify(site, "r1", "20", now=datetime.now(UTC) - timedelta(days=350))
    a1, a2 = site.devices["a1"], site.devices["a2"]
    with running_broker(site) as broker, ExitStack() as stack:
        kept = Session(site.ports["mtls"], a1, context=site.context("a1"))
        stack.callback(kept.close)
        reloads = _reloads(site)
        done = _run(_site_env(site, database_url, tmp_path / "home"), "--once",
                    "--data-interval", "0")
        wait_for(lambda: _reloads(site) > reloads, 5, "the broker to reload")
        watcher = Session(site.ports["plain"], "watcher", username=GATEWAY_USER,
                          password=GATEWAY_PASSWORD)
        stack.callback(watcher.close)
        granted = watcher.subscribe(f"aidlink/v1/{due}/down/{renewal.COMMAND}")
        wait_for(lambda: watcher.messages, 5, "the retained certificate")
        fresh_handshake = site.probe("mtls", site.context("a2"), a2)
        kept.publish(f"aidlink/v1/{a1}/{a1}/status", b"still here")
        serving = (broker.poll(), kept.client.is_connected(), kept.drops)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["data"] is None
    assert report["credentials"]["reloaded"] is True
    assert report["credentials"]["crls"] == 4
    assert report["renewal"]["renewed"] == [due]
    assert report["renewal"]["delivered"] == 1
    assert "broker credentials refreshed: 4 CRLs re-signed" in done.stderr
    after = _crls(site.out / CRL)
    assert after.keys() == before.keys() and len(after) == 4
    for issuer, crl in after.items():
        old = before[issuer]
        assert crl.next_update_utc is not None and old.next_update_utc is not None
        assert crl.next_update_utc - old.next_update_utc > timedelta(days=2, hours=23), issuer
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        old_number = old.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        assert number > old_number
    assert serving == (None, True, 0)
    assert fresh_handshake == ACCEPTED
    assert granted == [1]
    ((topic, payload),) = watcher.messages
    document = json.loads(payload)
    assert topic == f"aidlink/v1/{due}/down/{renewal.COMMAND}"
    certificate = x509.load_pem_x509_certificate(document["certificate_pem"].encode())
    assert certificate.not_valid_after_utc > datetime.now(UTC) + timedelta(days=300)
    assert format(certificate.serial_number, "x") == document["serial"]


def test_one_round_delivers_wipes_and_shuts_a_confirmed_device_out(
        site: Site, database_url: str, tmp_path: Path) -> None:
    a1, a2 = site.devices["a1"], site.devices["a2"]
    service.assign(site.conn, SECRET, device_id=a1, patient="p-1", basis="HSL", actor="test")
    lifecycle.return_device(site.conn, device_id=a1, actor="test", reason="patient moved")
    wipe = lifecycle.start_reconditioning(site.conn, device_id=a1, actor="test", reason="reuse")
    # No credentials part: the refresh after the confirmation is the downlink's own.
    env = _site_env(site, database_url, tmp_path / "home")
    once = ("--once", "--data-interval", "0", "--credentials-interval", "0")
    with running_broker(site), ExitStack() as stack:
        sent = _run(env, *once)
        watcher = Session(site.ports["plain"], "watcher", username=GATEWAY_USER,
                          password=GATEWAY_PASSWORD)
        stack.callback(watcher.close)
        granted = watcher.subscribe(wipe.topic)
        wait_for(lambda: watcher.messages, 5, "the retained wipe")
        before = (site.probe("mtls", site.context("a1"), a1), _reloads(site))
        # What the gateway does with the device's answer.
        lifecycle.confirm_wipe(site.conn, device_id=a1, nonce=wipe.nonce,
                               confirmed_at=datetime.now(UTC), actor="gateway")
        cleared = _run(env, *once)
        wait_for(lambda: _reloads(site) > before[1], 5, "the broker to reload")
        after = (site.probe("mtls", site.context("a1"), a1),
                 site.probe("mtls", site.context("a2"), a2))
    assert sent.returncode == 0, sent.stderr
    first = json.loads(sent.stdout)
    assert first["wipes"] == [{"device_id": a1, "topic": wipe.topic,
                               "action": downlink.PUBLISHED, "published": True}]
    assert first["renewal"] == {"renewed": [], "refused": [], "delivered": 0,
                                "undelivered": 0}
    assert first["credentials"] is None
    assert granted == [1]
    assert watcher.messages[0] == (wipe.topic, wipe.payload.encode())
    assert before[0] == ACCEPTED
    assert cleared.returncode == 0, cleared.stderr
    second = json.loads(cleared.stdout)
    assert [(w["action"], w["published"]) for w in second["wipes"]] == [
        (downlink.CLEARED, True)]
    assert second["credentials"] is None
    assert "broker credentials refreshed" in cleared.stderr
    assert after == (TLS_REFUSED, ACCEPTED)


def test_one_round_applies_retention(database_url: str, tmp_path: Path) -> None:
    db.migrate(database_url)
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=100), now - timedelta(days=1)
    with psycopg.connect(database_url) as conn:
        service.add_principal(conn, "20", "Region Dalarna")
        policy.set_policy(conn, "20", {"observation_retention_days": 60}, "test")
        for at in (old, recent):
            conn.execute("SELECT aidlink_ensure_observation_partition(%s)", (at,))
            conn.execute(
                "INSERT INTO observations (ts, device_id, code, principal_code, patient_key,"
                " value, unit, channel, received_at)"
                " VALUES (%s, 'dev-1', '8480-6', '20', 'p', 120, 'mm[Hg]', 'ble/2a35', %s)",
                (at, at))
    done = _run(_env(database_url, tmp_path), "--once", "--renew-interval", "0")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["renewal"] is None and report["credentials"] is None
    assert "error" not in report["data"]["retention"]
    with psycopg.connect(database_url) as conn:
        left = [row[0] for row in conn.execute("SELECT ts FROM observations ORDER BY ts")]
        runs = conn.execute("SELECT count(*) FROM retention_runs").fetchone()
    assert left == [recent]
    assert runs == (1,)
    assert "retention run" in done.stderr


def test_the_schedules_run_until_sigterm(site: Site, database_url: str,
                                         tmp_path: Path) -> None:
    log = tmp_path / "housekeeping.log"
    with running_broker(site), log.open("w") as out:
        reloads = _reloads(site)
        process = subprocess.Popen([AIDLINK, "housekeeping"], stdout=subprocess.DEVNULL,
                                   stderr=out, env=_site_env(site, database_url, tmp_path))
        try:
            wait_for(lambda: _reloads(site) > reloads, 30, "the first credentials refresh")
            wait_for(lambda: "retention run" in log.read_text(), 30, "the first data round")
            process.send_signal(signal.SIGTERM)
            code = process.wait(60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    text = log.read_text()
    assert code == 0, text
    assert "housekeeping running: certificate renewal every 3600 s" in text
    assert "broker credentials refreshed" in text
    assert text.rstrip().endswith("housekeeping stopped"), text


def test_a_pid_file_naming_this_process_is_refused_not_signalled(
        site: Site, database_url: str) -> None:
    # What a broker in another pid namespace would look like: its pid is someone else's here.
    (site.out / PID_FILE).write_text(f"{os.getpid()}\n")
    crls = (site.out / CRL).read_text()
    with pytest.raises(BrokerPidError, match="another pid namespace"):
        refresh_broker(database_url, PASSPHRASE, site.out)
    assert (site.out / CRL).read_text() == crls


@pytest.mark.parametrize(("settings", "args", "named"), [
    ({"AIDLINK_DATABASE_URL": ""}, [], "AIDLINK_DATABASE_URL"),
    ({"AIDLINK_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
     ["--renew-interval", "0"], "AIDLINK_DATABASE_URL"),
    ({}, [], "AIDLINK_MQTT_URL"),
    ({"AIDLINK_MQTT_URL": "http://broker"}, [], "AIDLINK_MQTT_URL"),
    ({"AIDLINK_MQTT_URL": "mqtt://127.0.0.1:1", "AIDLINK_CA_PASSPHRASE": "short"}, [],
     "AIDLINK_CA_PASSPHRASE"),
    ({"AIDLINK_MQTT_URL": "mqtt://127.0.0.1:1",
      "AIDLINK_CA_PASSPHRASE": "a-different-passphrase-of-some-length"}, [],
     "AIDLINK_CA_PASSPHRASE"),
    ({"AIDLINK_BROKER_DIR": "{tmp}/empty"}, ["--renew-interval", "0"], "AIDLINK_BROKER_DIR"),
    ({}, ["--renew-interval", "0", "--data-interval", "0"], "AIDLINK_BROKER_DIR"),
    ({}, ["--renew-interval", "0", "--credentials-interval", "604800"],
     "--credentials-interval"),
    ({"AIDLINK_CREDENTIALS_INTERVAL_S": "302401"}, ["--renew-interval", "0"],
     "AIDLINK_CREDENTIALS_INTERVAL_S"),
])
def test_bad_settings_exit_non_zero_naming_the_setting(
        database_url: str, tmp_path: Path, settings: dict[str, str], args: list[str],
        named: str) -> None:
    db.migrate(database_url)
    with psycopg.connect(database_url) as conn:
        # A root CA under the test passphrase, for the wrong one to fail on.
        service.add_principal(conn, "20", "Region Dalarna")
        ensure_authorities(conn, PASSPHRASE)
    (tmp_path / "empty").mkdir()
    env = {"AIDLINK_DATABASE_URL": database_url, "AIDLINK_HOME": str(tmp_path / "home"),
           "AIDLINK_CA_PASSPHRASE": PASSPHRASE.decode(), "AIDLINK_MQTT_URL": "",
           "AIDLINK_BROKER_DIR": ""}
    env.update({key: value.format(tmp=tmp_path) for key, value in settings.items()})
    # An empty value stands for a setting left out: CliRunner removes a variable set to None.
    result = CliRunner().invoke(main, ["housekeeping", "--once", *args],
                                env={key: value or None for key, value in env.items()})
    assert result.exit_code != 0, result.output
    assert named in result.output
    assert result.output.startswith("aidlink: ")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM retention_runs").fetchone() == (0,)
