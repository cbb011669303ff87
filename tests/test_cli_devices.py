"""``aidlink device``: onboarding (passwords, certificates, bundles), pairing with a hub,
assignment to a patient, and the device's history."""

from __future__ import annotations

import getpass
import json
import re
import stat
from collections.abc import Mapping
from pathlib import Path

import psycopg
from cryptography import x509

from provisioning.passwords import verify_password
from tests import cli_support
from tests.cli_support import add_principal, failure, lines, one, run, timestamp
from tests.support import count

DEVICE_ID = r"dev-[0-9a-f]{12}"

# The shared fixture, bound here so that pytest finds it for this module's tests.
env = cli_support.env


def actor() -> str:
    """Who the command line records as having acted."""
    return f"cli:{getpass.getuser()}"


def onboard(env: Mapping[str, str | None], principal: str, model: str, serial: str) -> str:
    """Onboard a device through the command line; its id."""
    row = one(run(env, "device", "onboard", "--principal", principal, "--model", model,
                  "--serial", serial))
    device_id = row["device_id"]
    assert isinstance(device_id, str)
    return device_id


# --- device onboard --------------------------------------------------------------------------


def test_onboard_for_password_principal_returns_password_once_and_stores_its_hash(
        env: dict[str, str | None]) -> None:
    add_principal(env, "20", "password")
    row = one(run(env, "device", "onboard", "--principal", "20", "--model", "bpm-a",
                  "--serial", "0001"))
    password = row.pop("mqtt_password")
    assert row == {"device_id": row["device_id"], "client_id": row["device_id"],
                   "mqtt_username": row["device_id"], "principal": "20", "model": "bpm-a",
                   "serial": "0001", "state": "in_stock",
                   "topic_prefix": f"aidlink/v1/{row['device_id']}/"}
    assert isinstance(password, str)
    assert len(password) >= 20
    assert re.fullmatch(DEVICE_ID, row["device_id"])
    with psycopg.connect(str(env["AIDLINK_DATABASE_URL"])) as conn:
        stored = conn.execute("SELECT mqtt_password_hash, state FROM devices WHERE id = %s",
                              (row["device_id"],)).fetchone()
    assert stored is not None
    hashed, state = stored
    assert state == "in_stock"
    assert hashed.startswith("$7$")
    assert password not in hashed
    assert verify_password(password, hashed)
    assert not verify_password(password + "x", hashed)


def test_onboard_for_mtls_principal_gets_a_certificate_not_a_password(
        env: dict[str, str | None], tmp_path: Path) -> None:
    add_principal(env, "2080")
    row = one(run(env, "device", "onboard", "--principal", "2080", "--model", "bpm-a",
                  "--serial", "0002", "--out", str(tmp_path / "bundle")))
    assert {k: v for k, v in row.items() if not k.startswith(("certificate", "ca_chain",
                                                              "private_key"))} == {
        "device_id": row["device_id"], "client_id": row["device_id"], "principal": "2080",
        "model": "bpm-a", "serial": "0002", "state": "in_stock",
        "topic_prefix": f"aidlink/v1/{row['device_id']}/"}
    certificate = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
    cn = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == row["client_id"]
    assert row["private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "bundle" / "device.key").read_text() == row["private_key_pem"]
    assert (tmp_path / "bundle" / "device.key").stat().st_mode & 0o777 == 0o600
    assert "mqtt_password" not in row
    assert count(str(env["AIDLINK_DATABASE_URL"]),
                 "SELECT count(*) FROM devices WHERE mqtt_password_hash IS NOT NULL") == 0


def test_onboard_out_writes_the_same_bundle_readable_only_by_owner(
        env: dict[str, str | None], tmp_path: Path) -> None:
    add_principal(env, "20", "password")
    out = tmp_path / "bundles" / "cuff-1"
    result = run(env, "device", "onboard", "--principal", "20", "--model", "bpm-a",
                 "--serial", "0003", "--out", str(out))
    printed = one(result)
    bundle = out / "bundle.json"
    assert bundle.read_text() == result.stdout
    assert json.loads(bundle.read_text()) == printed
    assert "mqtt_password" in printed
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600


def test_onboard_for_unknown_principal_names_it(env: dict[str, str | None]) -> None:
    message = failure(run(env, "device", "onboard", "--principal", "99", "--model", "bpm-a",
                          "--serial", "0004"))
    assert message == "aidlink: principal 99 does not exist\n"
    assert count(str(env["AIDLINK_DATABASE_URL"]), "SELECT count(*) FROM devices") == 0


def test_onboard_duplicate_model_and_serial_is_refused(env: dict[str, str | None]) -> None:
    add_principal(env, "20")
    first = onboard(env, "20", "bpm-a", "0005")
    message = failure(run(env, "device", "onboard", "--principal", "20", "--model", "bpm-a",
                          "--serial", "0005"))
    assert message == "aidlink: a device bpm-a with serial 0005 is already onboarded\n"
    url = str(env["AIDLINK_DATABASE_URL"])
    assert count(url, "SELECT count(*) FROM devices") == 1
    assert count(url, "SELECT count(*) FROM device_history WHERE device_id <> %s", first) == 0


# --- device pair, assign, history ------------------------------------------------------------


def test_pair_prints_the_pairing_and_stores_it(env: dict[str, str | None]) -> None:
    add_principal(env, "20")
    hub = onboard(env, "20", "hub", "H1")
    cuff = onboard(env, "20", "bpm-a", "C1")
    assert one(run(env, "device", "pair", cuff, "--hub", hub)) == {
        "peripheral_id": cuff, "hub_id": hub}
    url = str(env["AIDLINK_DATABASE_URL"])
    assert count(url, "SELECT count(*) FROM pairings WHERE hub_id = %s AND peripheral_id = %s"
                 " AND unpaired_at IS NULL", hub, cuff) == 1


def test_pair_across_principals_is_refused(env: dict[str, str | None]) -> None:
    add_principal(env, "20")
    add_principal(env, "2080")
    hub = onboard(env, "2080", "hub", "H2")
    cuff = onboard(env, "20", "bpm-a", "C1")
    message = failure(run(env, "device", "pair", cuff, "--hub", hub))
    assert message == (f"aidlink: device {cuff} (principal 20) cannot pair with hub {hub}"
                       " of principal 2080\n")
    assert count(str(env["AIDLINK_DATABASE_URL"]), "SELECT count(*) FROM pairings") == 0


def test_pair_a_device_with_itself_exits_1_naming_it(env: dict[str, str | None]) -> None:
    add_principal(env, "20")
    hub = onboard(env, "20", "hub", "H1")
    message = failure(run(env, "device", "pair", hub, "--hub", hub))
    assert message.startswith("aidlink: ") and hub in message, message
    assert count(str(env["AIDLINK_DATABASE_URL"]), "SELECT count(*) FROM pairings") == 0


def test_assign_stores_only_a_pseudonym_of_the_patient(env: dict[str, str | None]) -> None:
    add_principal(env, "20")
    cuff = onboard(env, "20", "bpm-a", "C1")
    ref = "19121212-1212"
    row = one(run(env, "device", "assign", cuff, "--patient", ref, "--basis", "HSL"))
    valid_from = timestamp(row.pop("valid_from"))
    assert row == {"assignment_id": row["assignment_id"], "device_id": cuff, "principal": "20",
                   "patient": ref, "basis": "HSL"}
    assert isinstance(row["assignment_id"], int)
    url = str(env["AIDLINK_DATABASE_URL"])
    with psycopg.connect(url) as conn:
        stored = conn.execute(
            "SELECT row_to_json(a)::text, a.valid_from, a.basis, a.assigned_by"
            " FROM assignments a").fetchall()
        history = conn.execute("SELECT row_to_json(h)::text FROM device_history h").fetchall()
        state = conn.execute("SELECT state FROM devices WHERE id = %s", (cuff,)).fetchone()
    assert len(stored) == 1
    text, stored_from, basis, assigned_by = stored[0]
    assert (stored_from, basis, assigned_by) == (valid_from, "HSL", actor())
    for needle in (ref, ref.replace("-", ""), "191212121212"):
        assert needle not in text
        assert all(needle not in h for (h,) in history)
    assert state == ("assigned",)


def test_assign_twice_says_only_a_device_in_stock_can_be_assigned(
        env: dict[str, str | None]) -> None:
    add_principal(env, "20")
    cuff = onboard(env, "20", "bpm-a", "C1")
    one(run(env, "device", "assign", cuff, "--patient", "p-1", "--basis", "SoL"))
    message = failure(run(env, "device", "assign", cuff, "--patient", "p-2", "--basis", "HSL"))
    assert message == (f"aidlink: device {cuff} is assigned;"
                       " only a device in stock can be assigned\n")
    assert count(str(env["AIDLINK_DATABASE_URL"]), "SELECT count(*) FROM assignments") == 1


def test_assign_unknown_basis_is_a_usage_error(env: dict[str, str | None]) -> None:
    add_principal(env, "20")
    cuff = onboard(env, "20", "bpm-a", "C1")
    result = run(env, "device", "assign", cuff, "--patient", "p-1", "--basis", "XYZ")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Invalid value for '--basis': 'XYZ' is not one of 'HSL', 'SoL'." in result.stderr
    assert count(str(env["AIDLINK_DATABASE_URL"]), "SELECT count(*) FROM assignments") == 0


def test_history_lists_onboarded_paired_assigned_oldest_first(
        env: dict[str, str | None]) -> None:
    add_principal(env, "20")
    hub = onboard(env, "20", "hub", "H1")
    cuff = onboard(env, "20", "bpm-a", "C1")
    one(run(env, "device", "pair", cuff, "--hub", hub))
    assignment = one(run(env, "device", "assign", cuff, "--patient", "p-1", "--basis", "HSL",
                         "--unit", "Falu lasarett"))
    result = run(env, "device", "history", cuff)
    assert result.exit_code == 0, result.stderr
    events = lines(result)
    times = [timestamp(event.pop("at")) for event in events]
    assert times == sorted(times)
    who = actor()
    assert events == [
        {"device_id": cuff, "action": "onboarded", "actor": who,
         "detail": {"principal": "20", "model": "bpm-a", "serial": "C1"}},
        # Principal 20's default policy requires mutual TLS: the cuff got a certificate.
        {"device_id": cuff, "action": "certificate_issued", "actor": who,
         "detail": {"serial": events[1]["detail"]["serial"], "policy_version": 0,
                    "server_generated_key": True}},
        {"device_id": cuff, "action": "paired", "actor": who, "detail": {"hub": hub}},
        {"device_id": cuff, "action": "assigned", "actor": who,
         "detail": {"assignment": assignment["assignment_id"], "basis": "HSL",
                    "prescribing_unit": "Falu lasarett"}},
    ]


def test_history_of_unknown_device_names_it(env: dict[str, str | None]) -> None:
    message = failure(run(env, "device", "history", "dev-000000000000"))
    assert message == "aidlink: device dev-000000000000 does not exist\n"
