"""The provisioning service layer against a real PostgreSQL, and the MQTT password hashes."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from gateway import db
from provisioning import service
from provisioning.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ProvisioningError,
)
from provisioning.passwords import hash_password, new_password, verify_password
from provisioning.patients import check_patient_ref, patient_key
from tests.support import SECRET, count, wait_for

Conn = psycopg.Connection[Any]


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    """A connection to a migrated database."""
    db.migrate(database_url)
    with psycopg.connect(database_url) as connection:
        yield connection


@pytest.fixture
def region(conn: Conn) -> str:
    """Principal 20, Region Dalarna, whose devices use passwords."""
    service.add_principal(conn, "20", "Region Dalarna", "password")
    return "20"


def onboard(conn: Conn, principal: str, model: str, serial: str) -> str:
    """Onboard one device; its id."""
    row = service.onboard_device(conn, principal=principal, model=model, serial=serial,
                                 actor="tech-1")
    device_id = row["device_id"]
    assert isinstance(device_id, str)
    return device_id


def open_pairings(conn: Conn, peripheral: str) -> list[tuple[str, bool]]:
    """(hub, still open) for each pairing of a peripheral, oldest first."""
    rows = conn.execute("SELECT hub_id, unpaired_at IS NULL FROM pairings"
                        " WHERE peripheral_id = %s ORDER BY id", (peripheral,)).fetchall()
    return [(str(hub), bool(is_open)) for hub, is_open in rows]


# --- principals ------------------------------------------------------------------------------


def test_add_principal_then_get_it(conn: Conn) -> None:
    added = service.add_principal(conn, "2080", "  Falun  ")
    assert isinstance(added.pop("created_at"), datetime)
    assert added == {"code": "2080", "name": "Falun", "device_auth": "mtls"}
    got = service.get_principal(conn, "2080")
    got.pop("created_at")
    assert got == added


def test_get_unknown_principal_names_it(conn: Conn) -> None:
    with pytest.raises(NotFoundError, match=r"^principal 99 does not exist$"):
        service.get_principal(conn, "99")


def test_add_principal_twice_is_a_conflict(conn: Conn, region: str) -> None:
    with pytest.raises(ConflictError, match=r"^principal 20 already exists$"):
        service.add_principal(conn, region, "Region Dalarna")


@pytest.mark.parametrize(
    ("code", "name", "device_auth", "message"),
    [
        ("bad code!", "X", "mtls", r"^principal code 'bad code!' is not valid"),
        ("", "X", "mtls", r"^principal code '' is not valid"),
        ("20", "   ", "mtls", r"^principal name must not be empty$"),
        ("20", "X", "saml", r"^device auth 'saml' is not one of"),
    ],
)
def test_add_principal_refuses_bad_input_naming_the_field(
        conn: Conn, code: str, name: str, device_auth: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        service.add_principal(conn, code, name, device_auth)
    assert service.list_principals(conn) == []


# --- onboarding ------------------------------------------------------------------------------


def test_onboard_password_device_keeps_only_the_hash(conn: Conn, region: str) -> None:
    row = service.onboard_device(conn, principal=region, model="bpm-a", serial="0001",
                                 actor="tech-1")
    password = row.pop("mqtt_password")
    device_id = row["device_id"]
    assert re.fullmatch(r"dev-[0-9a-f]{12}", device_id)
    assert row == {"device_id": device_id, "client_id": device_id, "mqtt_username": device_id,
                   "principal": "20", "model": "bpm-a", "serial": "0001", "state": "in_stock"}
    stored = conn.execute("SELECT mqtt_password_hash FROM devices WHERE id = %s",
                          (device_id,)).fetchone()
    assert stored is not None
    assert stored[0].startswith("$7$")
    assert password not in stored[0]
    assert verify_password(password, stored[0])
    device = service.get_device(conn, device_id)
    device.pop("created_at")
    assert device == {"id": device_id, "principal_code": "20", "client_id": device_id,
                      "model": "bpm-a", "serial": "0001", "state": "in_stock"}


def test_onboard_mtls_device_gets_no_password(conn: Conn) -> None:
    service.add_principal(conn, "2080", "Falun")
    row = service.onboard_device(conn, principal="2080", model="bpm-a", serial="0002",
                                 actor="tech-1")
    assert set(row) == {"device_id", "client_id", "principal", "model", "serial", "state"}
    stored = conn.execute("SELECT mqtt_password_hash FROM devices").fetchall()
    assert stored == [(None,)]


def test_onboard_for_unknown_principal_names_it(conn: Conn) -> None:
    with pytest.raises(NotFoundError, match=r"^principal 99 does not exist$"):
        onboard(conn, "99", "bpm-a", "0003")


def test_onboard_same_model_and_serial_twice_is_a_conflict(conn: Conn, region: str) -> None:
    onboard(conn, region, "bpm-a", "0004")
    with pytest.raises(ConflictError,
                       match=r"^a device bpm-a with serial 0004 is already onboarded$"):
        onboard(conn, region, "bpm-a", "0004")
    # The connection stays usable: the failed insert was rolled back to its savepoint.
    assert len(conn.execute("SELECT id FROM devices").fetchall()) == 1


@pytest.mark.parametrize(("model", "serial", "field"),
                         [("bpm;drop", "1", "model"), ("bpm-a", "", "serial")])
def test_onboard_refuses_malformed_model_or_serial(conn: Conn, region: str, model: str,
                                                   serial: str, field: str) -> None:
    with pytest.raises(InvalidInputError, match=rf"^{field} '"):
        onboard(conn, region, model, serial)


# --- pairing ---------------------------------------------------------------------------------


def test_pair_then_repair_to_another_hub_ends_the_first_pairing(conn: Conn, region: str) -> None:
    hub_a = onboard(conn, region, "hub", "H1")
    hub_b = onboard(conn, region, "hub", "H2")
    cuff = onboard(conn, region, "bpm-a", "C1")
    assert service.pair(conn, peripheral_id=cuff, hub_id=hub_a, actor="tech-1") == {
        "peripheral_id": cuff, "hub_id": hub_a}
    assert open_pairings(conn, cuff) == [(hub_a, True)]
    service.pair(conn, peripheral_id=cuff, hub_id=hub_b, actor="tech-2")
    assert open_pairings(conn, cuff) == [(hub_a, False), (hub_b, True)]


def test_pair_across_principals_is_a_conflict(conn: Conn, region: str) -> None:
    service.add_principal(conn, "2080", "Falun")
    hub = onboard(conn, "2080", "hub", "H1")
    cuff = onboard(conn, region, "bpm-a", "C1")
    with pytest.raises(ConflictError, match=rf"^device {cuff} \(principal 20\) cannot pair"
                                            rf" with hub {hub} of principal 2080$"):
        service.pair(conn, peripheral_id=cuff, hub_id=hub, actor="tech-1")
    assert open_pairings(conn, cuff) == []


@pytest.mark.parametrize("retired", ["peripheral", "hub"])
def test_pair_with_a_retired_device_is_a_conflict(conn: Conn, region: str,
                                                  retired: str) -> None:
    hub = onboard(conn, region, "hub", "H1")
    cuff = onboard(conn, region, "bpm-a", "C1")
    gone = cuff if retired == "peripheral" else hub
    conn.execute("UPDATE devices SET state = 'retired' WHERE id = %s", (gone,))
    with pytest.raises(ConflictError, match=rf"^device {gone} is retired$"):
        service.pair(conn, peripheral_id=cuff, hub_id=hub, actor="tech-1")
    assert open_pairings(conn, cuff) == []


def test_pair_unknown_hub_names_it(conn: Conn, region: str) -> None:
    cuff = onboard(conn, region, "bpm-a", "C1")
    with pytest.raises(NotFoundError, match=r"^device dev-000000000000 does not exist$"):
        service.pair(conn, peripheral_id=cuff, hub_id="dev-000000000000", actor="tech-1")


def test_pair_a_device_with_itself_is_refused_by_the_service(conn: Conn, region: str) -> None:
    # The schema's CHECK (hub_id <> peripheral_id) must not surface as a raw database error:
    # the command line only turns ProvisioningError into a message.
    hub = onboard(conn, region, "hub", "H1")
    with pytest.raises(ProvisioningError, match=hub):
        service.pair(conn, peripheral_id=hub, hub_id=hub, actor="tech-1")


# --- assignment ------------------------------------------------------------------------------


def test_assign_marks_the_device_assigned_under_a_pseudonym(conn: Conn, region: str) -> None:
    cuff = onboard(conn, region, "bpm-a", "C1")
    row = service.assign(conn, SECRET, device_id=cuff, patient="19121212-1212", basis="HSL",
                         actor="tech-1", prescribing_unit="Falu lasarett")
    assert isinstance(row.pop("valid_from"), datetime)
    assert row == {"assignment_id": row["assignment_id"], "device_id": cuff, "principal": "20",
                   "patient": "19121212-1212", "basis": "HSL"}
    assert service.get_device(conn, cuff)["state"] == "assigned"
    stored = conn.execute(
        "SELECT device_id, principal_code, patient_key, basis, prescribing_unit, assigned_by,"
        " valid_to FROM assignments").fetchall()
    key = patient_key(SECRET, "20", "19121212-1212")
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert stored == [(cuff, "20", key, "HSL", "Falu lasarett", "tech-1", None)]


def test_same_patient_ref_under_two_principals_gets_two_keys(conn: Conn, region: str) -> None:
    service.add_principal(conn, "2080", "Falun")
    ours = onboard(conn, region, "bpm-a", "C1")
    theirs = onboard(conn, "2080", "bpm-a", "C2")
    for device in (ours, theirs):
        service.assign(conn, SECRET, device_id=device, patient="p-1", basis="SoL",
                       actor="tech-1")
    keys = dict(conn.execute("SELECT principal_code, patient_key FROM assignments").fetchall())
    assert keys == {"20": patient_key(SECRET, "20", "p-1"),
                    "2080": patient_key(SECRET, "2080", "p-1")}
    assert keys["20"] != keys["2080"]


def test_assign_twice_is_a_conflict(conn: Conn, region: str) -> None:
    cuff = onboard(conn, region, "bpm-a", "C1")
    service.assign(conn, SECRET, device_id=cuff, patient="p-1", basis="HSL", actor="tech-1")
    with pytest.raises(ConflictError, match=rf"^device {cuff} is assigned; only a device in"
                                            r" stock can be assigned$"):
        service.assign(conn, SECRET, device_id=cuff, patient="p-2", basis="HSL",
                       actor="tech-1")
    assert len(conn.execute("SELECT id FROM assignments").fetchall()) == 1


def test_assign_unknown_basis_names_the_choices(conn: Conn, region: str) -> None:
    cuff = onboard(conn, region, "bpm-a", "C1")
    with pytest.raises(InvalidInputError, match=r"^basis 'LSS' must be one of HSL, SoL$"):
        service.assign(conn, SECRET, device_id=cuff, patient="p-1", basis="LSS",
                       actor="tech-1")
    assert service.get_device(conn, cuff)["state"] == "in_stock"


@pytest.mark.parametrize("ref", ["", "has space", "a/b", "x" * 65, "p-1\n", "åsa-1"])
def test_assign_refuses_bad_patient_refs_naming_the_rule(conn: Conn, region: str,
                                                         ref: str) -> None:
    cuff = onboard(conn, region, "bpm-a", "C1")
    rule = "patient reference must be 1-64 characters of letters, digits, '-' and '.'"
    with pytest.raises(InvalidInputError) as caught:
        service.assign(conn, SECRET, device_id=cuff, patient=ref, basis="HSL", actor="tech-1")
    assert str(caught.value) == rule
    assert service.get_device(conn, cuff)["state"] == "in_stock"
    assert conn.execute("SELECT count(*) FROM assignments").fetchone() == (0,)


def test_good_patient_refs_are_accepted() -> None:
    for ref in ("19121212-1212", "191212121212", "p.1", "x" * 64):
        assert check_patient_ref(ref) == ref


def test_assign_racing_another_assignment_is_a_conflict(database_url: str) -> None:
    # Two technicians assign the same cuff at once. The loser must get the ConflictError the
    # command line reports, not the unique-index violation of assignments_one_open.
    db.migrate(database_url)
    with psycopg.connect(database_url) as setup:
        service.add_principal(setup, "20", "Region Dalarna")
        cuff = onboard(setup, "20", "bpm-a", "C1")
    outcome: list[BaseException] = []

    def loser() -> None:
        with psycopg.connect(database_url) as racer:
            try:
                service.assign(racer, SECRET, device_id=cuff, patient="p-2", basis="HSL",
                               actor="tech-2")
            except BaseException as exc:  # handed to the test thread
                outcome.append(exc)

    with psycopg.connect(database_url) as winner:
        winner.execute("SELECT 1 FROM devices WHERE id = %s FOR UPDATE", (cuff,))
        thread = threading.Thread(target=loser)
        thread.start()
        try:
            wait_for(lambda: count(database_url, "SELECT count(*) FROM pg_locks"
                                   " WHERE NOT granted"), what="the racer to wait for the lock")
            service.assign(winner, SECRET, device_id=cuff, patient="p-1", basis="HSL",
                           actor="tech-1")
            winner.commit()
        finally:
            thread.join(20)
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], ConflictError), repr(outcome[0])
    assert count(database_url, "SELECT count(*) FROM assignments") == 1


# --- history ---------------------------------------------------------------------------------


def test_history_is_the_devices_life_oldest_first(conn: Conn, region: str) -> None:
    hub = onboard(conn, region, "hub", "H1")
    cuff = onboard(conn, region, "bpm-a", "C1")
    service.pair(conn, peripheral_id=cuff, hub_id=hub, actor="tech-2")
    assigned = service.assign(conn, SECRET, device_id=cuff, patient="p-1", basis="SoL",
                              actor="tech-3")
    events = service.history(conn, cuff)
    times = [event.pop("at") for event in events]
    assert times == sorted(times)
    assert events == [
        {"device_id": cuff, "action": "onboarded", "actor": "tech-1",
         "detail": {"principal": "20", "model": "bpm-a", "serial": "C1"}},
        {"device_id": cuff, "action": "paired", "actor": "tech-2", "detail": {"hub": hub}},
        {"device_id": cuff, "action": "assigned", "actor": "tech-3",
         "detail": {"assignment": assigned["assignment_id"], "basis": "SoL",
                    "prescribing_unit": None}},
    ]
    assert "p-1" not in str(events)


def test_history_of_unknown_device_names_it(conn: Conn) -> None:
    with pytest.raises(NotFoundError, match=r"^device dev-000000000000 does not exist$"):
        service.history(conn, "dev-000000000000")


# --- passwords -------------------------------------------------------------------------------


def test_password_hash_round_trip_in_mosquitto_form() -> None:
    password = new_password()
    encoded = hash_password(password)
    parts = encoded.split("$")
    assert parts[:2] == ["", "7"]
    assert int(parts[2]) >= 101  # mosquitto_passwd's default iteration count
    assert len(parts) == 5
    assert password not in encoded
    assert verify_password(password, encoded)


def test_wrong_password_fails_verification() -> None:
    encoded = hash_password("correct horse")
    assert not verify_password("correct horsf", encoded)
    assert not verify_password("", encoded)


def test_hash_is_salted_and_deterministic_given_the_salt() -> None:
    salt = bytes(range(12))
    assert hash_password("pw", salt=salt) == hash_password("pw", salt=salt)
    assert hash_password("pw") != hash_password("pw")


@pytest.mark.parametrize("encoded", ["", "plain", "$6$10$c2FsdA==$aGFzaA==", "$7$1$a$b$c"])
def test_verify_refuses_what_is_not_a_7_hash(encoded: str) -> None:
    assert not verify_password("pw", encoded)


def test_new_passwords_differ() -> None:
    assert len({new_password() for _ in range(20)}) == 20


def test_an_alarm_unit_is_found_by_its_dc09_account(database_url: str) -> None:
    db.migrate(database_url)
    with psycopg.connect(database_url) as conn:
        service.add_principal(conn, "2062", "Mora")
        unit = service.onboard_device(conn, principal="2062", model="alarm", serial="A1",
                                      actor="t", alarm_account="1234ab", firmware_version="2.1")
        assert (unit["alarm_account"], unit["firmware_version"]) == ("1234AB", "2.1")
        assert service.client_of_alarm_account(conn, "1234AB") == unit["client_id"]
        assert service.client_of_alarm_account(conn, "9999") is None
        with pytest.raises(ConflictError, match="alarm account 1234AB is already in use"):
            service.onboard_device(conn, principal="2062", model="alarm", serial="A2",
                                   actor="t", alarm_account="1234AB")
        with pytest.raises(InvalidInputError, match="alarm account"):
            service.onboard_device(conn, principal="2062", model="alarm", serial="A3",
                                   actor="t", alarm_account="not hex!")
