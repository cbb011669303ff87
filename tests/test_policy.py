"""Per-principal security policies against a real PostgreSQL: versions, validation, checks."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from gateway import db
from provisioning import pki, service
from provisioning.errors import InvalidInputError, NotFoundError
from provisioning.policy import (
    Policy,
    check_device,
    current_policy,
    fleet_check,
    parse_policy,
    policy_history,
    set_policy,
    version_key,
)

Conn = psycopg.Connection[Any]
DEFAULT_DOCUMENT = {
    "device_auth": "mtls", "key_algorithm": "EC-P256", "certificate_lifetime_days": 365,
    "renew_before_days": 30, "min_tls_version": "1.2", "allowed_models": [], "min_firmware": {},
    "observation_retention_days": 3650, "raw_payload_retention_days": 90, "api_clients": [],
}


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    """A migrated database with Region Dalarna (mTLS) and Vansbro (passwords)."""
    db.migrate(database_url)
    with psycopg.connect(database_url, autocommit=True) as connection:
        service.add_principal(connection, "20", "Region Dalarna")
        service.add_principal(connection, "2021", "Vansbro", "password")
        yield connection


def onboard(conn: Conn, principal: str, model: str, serial: str,
            firmware: str | None = None) -> str:
    """Onboard one device; its id."""
    row = service.onboard_device(conn, principal=principal, model=model, serial=serial,
                                 actor="tech-1", firmware_version=firmware)
    return str(row["device_id"])


def test_a_principal_without_a_stored_policy_gets_the_default(conn: Conn) -> None:
    region, vansbro = current_policy(conn, "20"), current_policy(conn, "2021")
    assert (region.document(), region.version, region.label()) == (
        DEFAULT_DOCUMENT, 0, "principal 20's default policy")
    # The device auth chosen with `principal add` stands until a policy is stored.
    assert vansbro.document() == {**DEFAULT_DOCUMENT, "device_auth": "password"}
    with pytest.raises(NotFoundError, match=r"^principal 99 does not exist$"):
        current_policy(conn, "99")


def test_every_version_is_kept_and_the_highest_is_current(conn: Conn) -> None:
    first = set_policy(conn, "20", {"key_algorithm": "EC-P384"}, "tech-1")
    second = set_policy(conn, "20", Policy(key_algorithm="RSA-3072", device_auth="password"),
                        "tech-2")
    # Storing the current rules again is no new version.
    again = set_policy(conn, "20", {"key_algorithm": "RSA-3072", "device_auth": "password"},
                       "tech-3")
    assert (first, second, again) == (1, 2, 2)
    current = current_policy(conn, "20")
    assert (current.key_algorithm, current.version, current.label()) == (
        "RSA-3072", 2, "principal 20's policy v2")
    history = [(row["version"], row["created_by"], row["document"]["key_algorithm"])
               for row in policy_history(conn, "20")]
    assert history == [(1, "tech-1", "EC-P384"), (2, "tech-2", "RSA-3072")]
    # Onboarding reads the principal's device auth, so it follows the policy.
    assert service.get_principal(conn, "20")["device_auth"] == "password"
    with pytest.raises(NotFoundError, match=r"^principal 99 does not exist$"):
        set_policy(conn, "99", {}, "tech-1")


@pytest.mark.parametrize(("document", "message"), [
    ({"key_algorithm": "RSA-1024"},
     "policy field key_algorithm: RSA-1024 is too weak: RSA keys must have at least 2048 bits"),
    ({"key_algorithm": "DSA-2048"}, "policy field key_algorithm: 'DSA-2048' is not one of"
     " EC-P256, EC-P384, RSA-2048, RSA-3072, RSA-4096"),
    ({"device_auth": "psk"}, "policy field device_auth: Input should be 'mtls' or 'password'"),
    ({"min_tls_version": "1.1"},
     "policy field min_tls_version: Input should be '1.2' or '1.3'"),
    ({"certificate_lifetime_days": 0},
     "policy field certificate_lifetime_days: Input should be greater than or equal to 1"),
    ({"certificate_lifetime_days": 90, "renew_before_days": 90},
     "policy: renew_before_days (90) must be less than certificate_lifetime_days (90)"),
    ({"min_firmware": {"sim-bpm": "1.x"}},
     "policy field min_firmware: '1.x' for sim-bpm is not a dotted version such as 1.2.0"),
    ({"allowed_models": ["sim-bpm"], "min_firmware": {"sim-scale": "2.0"}},
     "policy: min_firmware names sim-scale, which allowed_models does not allow"),
    ({"raw_payload_retention_days": -1, "colour": "red"},
     "policy field raw_payload_retention_days: Input should be greater than or equal to 1;"
     " policy field colour: Extra inputs are not permitted"),
])
def test_a_bad_policy_is_refused_naming_the_field(
        conn: Conn, document: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        set_policy(conn, "20", document, "tech-1")
    assert str(caught.value) == message
    assert policy_history(conn, "20") == []


def test_dotted_versions_compare_as_numbers() -> None:
    assert version_key("1.10.0") > version_key("1.9.2")
    assert version_key("1.1") == version_key("1.1.0") == (1, 1)
    assert version_key("2") > version_key("1.99.99.99")


def test_check_device_names_the_rule_and_the_policy_version(conn: Conn) -> None:
    for lifetime in (300, 200):
        set_policy(conn, "20", {"certificate_lifetime_days": lifetime}, "tech-1")
    set_policy(conn, "20", {"allowed_models": ["sim-bpm"], "min_firmware": {"sim-bpm": "1.1.0"}},
               "tech-1")
    policy = current_policy(conn, "20")
    results = {(model, firmware): check_device(policy, model, firmware) for model, firmware in
               [("sim-bpm", "1.1"), ("sim-bpm", "1.10.0"), ("sim-bpm", "1.0.0"),
                ("sim-bpm", None), ("sim-scale", "9.9")]}
    assert results == {
        ("sim-bpm", "1.1"): [],
        ("sim-bpm", "1.10.0"): [],
        ("sim-bpm", "1.0.0"): ["firmware 1.0.0 of sim-bpm is below the minimum 1.1.0 (policy v3)"],
        ("sim-bpm", None): ["firmware of sim-bpm is unknown; the minimum is 1.1.0 (policy v3)"],
        ("sim-scale", "9.9"): ["model sim-scale is not allowed by principal 20's policy v3"
                               " (allowed_models: sim-bpm)"],
    }
    assert check_device(parse_policy({}), "anything", None) == []


def test_fleet_check_lists_each_device_in_use_that_no_longer_complies(conn: Conn) -> None:
    passphrase = secrets.token_urlsafe(24).encode()
    good = onboard(conn, "20", "sim-bpm", "B1", "1.2.0")
    old_firmware = onboard(conn, "20", "sim-bpm", "B2", "1.0.3")
    scale = onboard(conn, "20", "sim-scale", "S1", "3.0")
    retired = onboard(conn, "20", "sim-scale", "S2", "3.0")
    conn.execute("UPDATE devices SET state = 'retired' WHERE id = %s", (retired,))
    with_password = onboard(conn, "2021", "sim-hub", "H1")
    pki.issue(conn, passphrase, device_id=good, principal="20", client_id=good)
    # A certificate issued long ago under looser rules: two years, an RSA key.
    set_policy(conn, "20", {"key_algorithm": "RSA-2048", "certificate_lifetime_days": 730},
               "tech-1")
    issued = pki.issue(conn, passphrase, device_id=old_firmware, principal="20",
                       client_id=old_firmware, now=datetime.now(UTC) - timedelta(days=800))
    set_policy(conn, "20", {"allowed_models": ["sim-bpm"], "min_firmware": {"sim-bpm": "1.1"},
                            "certificate_lifetime_days": 365}, "tech-2")
    set_policy(conn, "2021", {"device_auth": "mtls"}, "tech-2")
    expected: list[dict[str, Any]] = [
        {"device_id": old_firmware, "principal": "20", "model": "sim-bpm",
         "firmware_version": "1.0.3", "policy_version": 2, "reasons": [
             "firmware 1.0.3 of sim-bpm is below the minimum 1.1 (policy v2)",
             f"certificate {issued.serial} has an RSA-2048 key; principal 20's policy v2"
             " requires EC-P256 (key_algorithm)",
             f"certificate {issued.serial} is valid for 730 days, more than the 365 of"
             " principal 20's policy v2 (certificate_lifetime_days)",
             f"certificate {issued.serial} expired at {issued.not_after.isoformat()}"]},
        {"device_id": scale, "principal": "20", "model": "sim-scale",
         "firmware_version": "3.0", "policy_version": 2, "reasons": [
             "model sim-scale is not allowed by principal 20's policy v2"
             " (allowed_models: sim-bpm)"]},
        {"device_id": with_password, "principal": "2021", "model": "sim-hub",
         "firmware_version": None, "policy_version": 1, "reasons": [
             "device has an MQTT password but principal 2021's policy v1 requires mtls"
             " (device_auth)"]},
    ]
    # Ordered by principal, then device id.
    assert fleet_check(conn) == sorted(expected, key=lambda f: (f["principal"], f["device_id"]))
    assert fleet_check(conn, "2021") == expected[2:]
