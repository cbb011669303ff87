"""The ``aidlink`` command line, driven through click's runner and the installed console script."""

from __future__ import annotations

import getpass
import json
import re
import stat
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from click.testing import CliRunner, Result
from cryptography import x509

from gateway import db
from gateway.auth import Caller, Role, verify_token
from gateway.cli import main
from gateway.token_keys import KeyRing, genesis_key
from provisioning.passwords import verify_password
from tests.support import count

SECRET_TEXT = "aidlink-cli-test-secret-0123456789abcdef"
DEVICE_ID = r"dev-[0-9a-f]{12}"

# Blood Pressure Measurement (GATT 0x2A35), built from the spec's field layout: flags 0x1e
# (mmHg, time stamp, pulse rate, user id, measurement status), systolic 128, diastolic 82,
# MAP 97 (SFLOAT, exponent 0), time stamp 2020-11-22 10:00:00 (the device's wall clock),
# pulse 72/min, user 1, status 0x0000.
BP_WITH_TIME = "1e800052006100e4070b160a00004800010000"
BP_PANEL = "85354-9"


def bp_values(measured_at: str) -> list[dict[str, Any]]:
    """The canonical lines BP_WITH_TIME decodes to, with its time as given."""

    def line(code: str, mdc: int, value: int, unit: str, panel: str | None) -> dict[str, Any]:
        return {"kind": "observation", "code": code, "mdc": mdc, "value": value, "unit": unit,
                "measured_at": measured_at, "flags": [], "absent_reason": None,
                "panel": panel, "device_user": 1, "sequence": None}

    return [
        line("8480-6", 150021, 128, "mm[Hg]", BP_PANEL),
        line("8462-4", 150022, 82, "mm[Hg]", BP_PANEL),
        line("8478-0", 150023, 97, "mm[Hg]", BP_PANEL),
        line("8867-4", 149546, 72, "/min", None),
    ]


def environment(home: Path, url: str | None = None, secret: str | None = SECRET_TEXT
                ) -> dict[str, str | None]:
    """The AIDLINK_* environment of one invocation (None removes a variable)."""
    return {"AIDLINK_DATABASE_URL": url, "AIDLINK_HOME": str(home), "AIDLINK_SECRET": secret,
            "AIDLINK_MQTT_URL": None}


def run(env: Mapping[str, str | None], *args: str, stdin: bytes | None = None) -> Result:
    """Invoke ``aidlink ARGS`` in-process."""
    return CliRunner().invoke(main, list(args), env=env, input=stdin, catch_exceptions=False)


def lines(result: Result) -> list[dict[str, Any]]:
    """stdout as JSON lines."""
    return [json.loads(line) for line in result.stdout.splitlines()]


def one(result: Result) -> dict[str, Any]:
    """stdout as exactly one JSON object on one line."""
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("\n") == 1, result.stdout
    value = json.loads(result.stdout)
    assert isinstance(value, dict)
    return value


def failure(result: Result, code: int = 1) -> str:
    """The single stderr line of a failed invocation (nothing on stdout)."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def actor() -> str:
    """Who the command line records as having acted."""
    return f"cli:{getpass.getuser()}"


def timestamp(text: str) -> datetime:
    """A UTC RFC 3339 time from the command line's JSON."""
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str | None]:
    """An environment whose database is migrated."""
    db.migrate(database_url)
    return environment(tmp_path, database_url)


@pytest.fixture
def offline(tmp_path: Path) -> dict[str, str | None]:
    """An environment with no database and an empty home."""
    return environment(tmp_path)


def add_principal(env: Mapping[str, str | None], code: str, device_auth: str = "mtls") -> None:
    """Register a principal through the command line."""
    one(run(env, "principal", "add", code, "--name", f"Principal {code}",
            "--device-auth", device_auth))


def onboard(env: Mapping[str, str | None], principal: str, model: str, serial: str) -> str:
    """Onboard a device through the command line; its id."""
    row = one(run(env, "device", "onboard", "--principal", principal, "--model", model,
                  "--serial", serial))
    device_id = row["device_id"]
    assert isinstance(device_id, str)
    return device_id


# --- db migrate ------------------------------------------------------------------------------


def test_db_migrate_applies_every_migration_then_none(database_url: str,
                                                      tmp_path: Path) -> None:
    env = environment(tmp_path, database_url)
    first = one(run(env, "db", "migrate"))
    assert first == {"applied": db.migration_names()}
    assert first["applied"][:5] == ["0001_registry.sql", "0002_readings.sql",
                                    "0003_observations.sql",
                                    "0004_device_time_and_supervision.sql",
                                    "0005_event_identity.sql"]
    assert one(run(env, "db", "migrate")) == {"applied": []}
    assert count(database_url, "SELECT count(*) FROM schema_migrations") == len(
        db.migration_names())


# --- principal -------------------------------------------------------------------------------


def test_principal_add_defaults_to_mtls_and_prints_it(env: dict[str, str | None]) -> None:
    row = one(run(env, "principal", "add", "20", "--name", "Region Dalarna"))
    created_at = timestamp(row.pop("created_at"))
    assert row == {"code": "20", "name": "Region Dalarna", "device_auth": "mtls"}
    assert (datetime.now(created_at.tzinfo) - created_at).total_seconds() < 60


def test_principal_add_twice_names_the_duplicate(env: dict[str, str | None]) -> None:
    add_principal(env, "20")
    message = failure(run(env, "principal", "add", "20", "--name", "Region Dalarna igen"))
    assert message == "aidlink: principal 20 already exists\n"
    listed = lines(run(env, "principal", "list"))
    assert [(p["code"], p["name"]) for p in listed] == [("20", "Principal 20")]


def test_principal_add_bad_code_names_the_field(env: dict[str, str | None]) -> None:
    message = failure(run(env, "principal", "add", "bad code!", "--name", "Nowhere"))
    assert message.startswith("aidlink: principal code 'bad code!' is not valid"), message
    assert count(str(env["AIDLINK_DATABASE_URL"]), "SELECT count(*) FROM principals") == 0


def test_principal_list_prints_json_lines_by_code(env: dict[str, str | None]) -> None:
    one(run(env, "principal", "add", "2080", "--name", "Falun"))
    one(run(env, "principal", "add", "20", "--name", "Region Dalarna",
            "--device-auth", "password"))
    result = run(env, "principal", "list")
    assert result.exit_code == 0, result.stderr
    listed = lines(result)
    for row in listed:
        timestamp(row.pop("created_at"))
    assert listed == [
        {"code": "20", "name": "Region Dalarna", "device_auth": "password"},
        {"code": "2080", "name": "Falun", "device_auth": "mtls"},
    ]


def test_without_a_database_principal_list_says_how_to_configure_one(
        offline: dict[str, str | None], tmp_path: Path) -> None:
    message = failure(run(offline, "principal", "list"))
    assert message == (
        f"aidlink: no database: set AIDLINK_DATABASE_URL, or start `aidlink up` "
        f"with --home {tmp_path}\n"
    )


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


# --- token -----------------------------------------------------------------------------------


def _verified(env: Mapping[str, str | None], token: str) -> Caller:
    """Who a token stands for, checked against the key ring of the environment's database."""
    url = env["AIDLINK_DATABASE_URL"]
    assert url is not None
    ring = KeyRing(lambda: psycopg.connect(url), SECRET_TEXT.encode())
    return verify_token(ring, token)


def test_token_prints_one_bare_token_bound_to_principal_and_role(
        env: dict[str, str | None]) -> None:
    add_principal(env, "20")
    result = run(env, "token", "--principal", "20", "--role", "clinician")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    token = result.stdout.removesuffix("\n")
    assert result.stdout == token + "\n"
    assert token and " " not in token and "\n" not in token
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert _verified(env, token) == Caller(
        principal="20", role=Role.CLINICIAN, subject="cli-clinician")


def test_token_scope_narrows_what_it_grants(env: dict[str, str | None]) -> None:
    add_principal(env, "20")
    result = run(env, "token", "--principal", "20", "--role", "clinician", "--scope", "events")
    assert result.exit_code == 0, result.stderr
    assert _verified(env, result.stdout.strip()).scopes == {"events"}
    useless = failure(run(env, "token", "--principal", "20", "--role", "clinician",
                          "--scope", "audit"))
    assert useless == ("aidlink: scope audit is of no use to role clinician"
                       " (its scopes: devices, events, observations)\n")


def test_token_without_a_database_says_how_to_configure_one(
        offline: dict[str, str | None]) -> None:
    message = failure(run(offline, "token", "--principal", "20", "--role", "clinician"))
    assert message.startswith("aidlink: no database: set AIDLINK_DATABASE_URL")


def test_token_for_unknown_principal_fails_when_a_database_is_configured(
        env: dict[str, str | None]) -> None:
    message = failure(run(env, "token", "--principal", "99", "--role", "clinician"))
    assert message == "aidlink: principal 99 does not exist\n"


def test_token_with_unknown_role_is_a_usage_error(offline: dict[str, str | None]) -> None:
    result = run(offline, "token", "--principal", "20", "--role", "janitor")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Invalid value for '--role': 'janitor' is not one of" in result.stderr


def test_token_without_secret_uses_one_kept_in_the_home(database_url: str,
                                                       tmp_path: Path) -> None:
    db.migrate(database_url)
    env = environment(tmp_path, database_url, secret=None)
    add_principal(env, "20")
    result = run(env, "token", "--principal", "20", "--role", "auditor")
    assert result.exit_code == 0, result.stderr
    kept = tmp_path / "secret.key"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    # The database's first signing key is derived from the kept secret.
    kid = genesis_key(kept.read_text().strip().encode()).kid
    assert jwt.get_unverified_header(result.stdout.strip())["kid"] == kid
    ring = KeyRing(lambda: psycopg.connect(database_url), kept.read_text().strip().encode())
    caller = verify_token(ring, result.stdout.strip())
    assert caller == Caller(principal="20", role=Role.AUDITOR, subject="cli-auditor")
    # The next invocation reuses the kept secret rather than making another.
    again = run(env, "token", "--principal", "20", "--role", "auditor")
    assert jwt.get_unverified_header(again.stdout.strip())["kid"] == kid
    assert verify_token(ring, again.stdout.strip()) == caller

