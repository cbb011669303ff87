"""Device lifecycle against a real PostgreSQL: every transition, every refusal, owners."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from gateway import db
from provisioning import broker_config, lifecycle, pki, service
from provisioning.errors import ConflictError, InvalidInputError, NotFoundError
from tests.support import SECRET

Conn = psycopg.Connection[Any]
WIPED_AT = datetime(2024, 3, 5, 9, 30, tzinfo=UTC)
PASSPHRASE = secrets.token_urlsafe(24).encode()
MIGRATION = "0007_lifecycle_licences.sql"
# Later migrations that alter 0007's tables, so they cannot run without it.
ON_MIGRATION = ("0017_wipe_delivery.sql",)


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    """A migrated database with principals 20 (passwords) and 2080 (mTLS)."""
    db.migrate(database_url)
    with psycopg.connect(database_url) as connection:
        service.add_principal(connection, "20", "Region Dalarna", "password")
        service.add_principal(connection, "2080", "Falun")
        yield connection


def onboard(conn: Conn, serial: str, model: str = "bpm", principal: str = "20") -> str:
    """Onboard a device; its id."""
    device_id = service.onboard_device(conn, principal=principal, model=model, serial=serial,
                                       actor="tech-1")["device_id"]
    assert isinstance(device_id, str)
    return device_id


def assign(conn: Conn, device_id: str) -> int:
    """Assign a device to a patient; the assignment id."""
    row = service.assign(conn, SECRET, device_id=device_id, patient="19121212-1212",
                         basis="HSL", actor="tech-2")
    assignment_id = row["assignment_id"]
    assert isinstance(assignment_id, int)
    return assignment_id


def life(conn: Conn, device_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(action, actor, detail) of each history row, oldest first."""
    return [(row["action"], row["actor"], row["detail"])
            for row in service.history(conn, device_id)]


def state(conn: Conn, device_id: str) -> tuple[str, str, bool, bool]:
    """(principal, state, has a password hash, needs credentials)."""
    row = conn.execute("SELECT principal_code, state, mqtt_password_hash IS NOT NULL,"
                       " needs_credentials FROM devices WHERE id = %s", (device_id,)).fetchone()
    assert row is not None
    return str(row[0]), str(row[1]), bool(row[2]), bool(row[3])


def certificates(conn: Conn, device_id: str) -> list[tuple[str, str | None]]:
    """(serial, revocation reason) of a device's certificates."""
    return [(str(row[0]), row[1]) for row in conn.execute(
        "SELECT serial, revocation_reason FROM certificates WHERE device_id = %s ORDER BY serial",
        (device_id,))]


def exactly(message: str) -> str:
    """A pytest.raises pattern matching the whole message."""
    return f"^{re.escape(message)}$"


def returned(conn: Conn, serial: str) -> str:
    """A device that was assigned and has come back."""
    device_id = onboard(conn, serial)
    assign(conn, device_id)
    lifecycle.return_device(conn, device_id=device_id, actor="tech-3", reason="not needed")
    return device_id


def test_a_device_goes_round_the_whole_cycle(conn: Conn) -> None:
    hub, cuff = onboard(conn, "H1", "hub"), onboard(conn, "C1")
    service.pair(conn, peripheral_id=cuff, hub_id=hub, actor="tech-1")
    assignment = assign(conn, cuff)
    back = lifecycle.return_device(conn, device_id=cuff, actor="tech-3",
                                   reason="patient moved", fault="cuff leaks")
    assert isinstance(back.pop("valid_to"), datetime)
    assert back == {"device_id": cuff, "state": "returned", "assignment_id": assignment,
                    "fault": "cuff leaks"}
    assert conn.execute("SELECT count(*) FROM assignments WHERE device_id = %s"
                        " AND valid_to IS NULL", (cuff,)).fetchone() == (0,)
    wipe = lifecycle.start_reconditioning(conn, device_id=cuff, actor="tech-4",
                                          reason="back from patient")
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", wipe.nonce)
    assert wipe == lifecycle.Wipe(device_id=cuff, nonce=wipe.nonce,
                                  topic=f"aidlink/v1/{cuff}/down/wipe", payload=wipe.payload)
    assert json.loads(wipe.payload) == {"nonce": wipe.nonce, "device": cuff}
    # The device keeps its password, only to receive the wipe and confirm it.
    assert state(conn, cuff) == ("20", "reconditioning", True, False)
    assert conn.execute("SELECT count(*) FROM pairings WHERE unpaired_at IS NULL"
                        ).fetchone() == (0,)
    assert lifecycle.confirm_wipe(conn, device_id=cuff, nonce=wipe.nonce, confirmed_at=WIPED_AT,
                                  actor="gateway") == {"device_id": cuff,
                                                       "confirmed_at": WIPED_AT,
                                                       "credentials_revoked": True}
    assert state(conn, cuff) == ("20", "reconditioning", False, False)
    assert lifecycle.finish_reconditioning(conn, device_id=cuff, actor="tech-4") == {
        "device_id": cuff, "state": "in_stock", "needs_credentials": True}
    assert state(conn, cuff) == ("20", "in_stock", False, True)
    wiped = "2024-03-05T09:30:00+00:00"
    assert life(conn, cuff) == [
        ("onboarded", "tech-1", {"principal": "20", "model": "bpm", "serial": "C1"}),
        ("paired", "tech-1", {"hub": hub}),
        ("assigned", "tech-2", {"assignment": assignment, "basis": "HSL",
                                "prescribing_unit": None}),
        ("returned", "tech-3", {"assignment": assignment, "reason": "patient moved",
                                "fault": "cuff leaks"}),
        ("reconditioning_started", "tech-4", {"reason": "back from patient"}),
        ("unpaired", "tech-4", {"hub": hub, "peripheral": cuff, "reason": "back from patient"}),
        ("wipe_requested", "tech-4", {"reason": "back from patient"}),
        ("wipe_confirmed", "gateway", {"confirmed_at": wiped,
                                       "reason": "the device confirmed the wipe"}),
        ("credentials_revoked", "gateway", {"reason": "wipe confirmed", "mqtt_password": True,
                                            "certificates": [],
                                            "revocation_reason": "superseded"}),
        ("reconditioned", "tech-4", {"wiped_at": wiped, "needs_credentials": True,
                                     "reason": "wipe confirmed; back in stock"}),
    ]


def test_start_reconditioning_keeps_the_certificate_and_stores_the_nonce(conn: Conn) -> None:
    device = onboard(conn, "M1", principal="2080")
    issued = pki.issue(conn, PASSPHRASE, device_id=device, principal="2080", client_id=device)
    assign(conn, device)
    lifecycle.return_device(conn, device_id=device, actor="tech-3", reason="not needed")
    wipe = lifecycle.start_reconditioning(conn, device_id=device, actor="tech-4", reason="r")
    assert conn.execute("SELECT device_id, nonce, requested_by, confirmed_at, published_at"
                        " FROM wipe_requests").fetchall() == [
        (device, wipe.nonce, "tech-4", None, None)]
    assert certificates(conn, device) == [(issued.serial, None)]
    # Not denied by the broker's ACL: it must still receive the wipe and answer it.
    assert f"user {device}\n" not in broker_config.acl_text(conn)
    assert "credentials_revoked" not in [action for action, _, _ in life(conn, device)]


def test_the_confirmation_revokes_the_certificates_without_the_ca(conn: Conn) -> None:
    device = onboard(conn, "M1", principal="2080")
    issued = pki.issue(conn, PASSPHRASE, device_id=device, principal="2080", client_id=device)
    assign(conn, device)
    lifecycle.return_device(conn, device_id=device, actor="tech-3", reason="not needed")
    wipe = lifecycle.start_reconditioning(conn, device_id=device, actor="tech-4", reason="r")
    confirmed = lifecycle.confirm_wipe(conn, device_id=device, nonce=wipe.nonce,
                                       confirmed_at=WIPED_AT, actor="tech-4",
                                       reason="wiped by hand at the bench")
    assert confirmed["credentials_revoked"] is True
    assert certificates(conn, device) == [(issued.serial, "superseded")]
    # The next broker sync shuts the device out: the CRL lists it and the ACL denies it.
    assert f"user {device}\ntopic deny aidlink/v1/#\n" in broker_config.acl_text(conn)
    assert life(conn, device)[-2:] == [
        ("wipe_confirmed", "tech-4", {"confirmed_at": "2024-03-05T09:30:00+00:00",
                                      "reason": "wiped by hand at the bench"}),
        ("credentials_revoked", "tech-4", {"reason": "wipe confirmed", "mqtt_password": False,
                                           "certificates": [issued.serial],
                                           "revocation_reason": "superseded"}),
    ]


def test_finishing_revokes_credentials_issued_after_the_confirmation(conn: Conn) -> None:
    device = returned(conn, "C1")
    wipe = lifecycle.start_reconditioning(conn, device_id=device, actor="t", reason="r")
    lifecycle.confirm_wipe(conn, device_id=device, nonce=wipe.nonce, confirmed_at=WIPED_AT,
                           actor="gateway")
    conn.execute("UPDATE devices SET mqtt_password_hash = 'issued-meanwhile' WHERE id = %s",
                 (device,))
    lifecycle.finish_reconditioning(conn, device_id=device, actor="tech-4")
    assert state(conn, device) == ("20", "in_stock", False, True)
    assert [(action, actor, detail["reason"]) for action, actor, detail
            in life(conn, device)[-2:]] == [
        ("credentials_revoked", "tech-4", "back in stock after reconditioning"),
        ("reconditioned", "tech-4", "wipe confirmed; back in stock"),
    ]


def test_a_wrong_nonce_does_not_confirm_the_wipe(conn: Conn) -> None:
    device = returned(conn, "C1")
    lifecycle.start_reconditioning(conn, device_id=device, actor="t", reason="r")
    with pytest.raises(ConflictError, match=exactly(
            f"device {device}: the wipe confirmation's nonce does not match the device's latest"
            " wipe request; only a confirmation of that request counts")):
        lifecycle.confirm_wipe(conn, device_id=device, nonce="forged", confirmed_at=WIPED_AT,
                               actor="gateway")
    assert conn.execute("SELECT confirmed_at FROM wipe_requests").fetchall() == [(None,)]
    assert state(conn, device) == ("20", "reconditioning", True, False)
    with pytest.raises(ConflictError, match=exactly(
            f"device {device}: reconditioning cannot finish before the device confirms its"
            " wipe")):
        lifecycle.finish_reconditioning(conn, device_id=device, actor="t")


def test_the_nonce_of_an_earlier_wipe_does_not_count_again(conn: Conn) -> None:
    device = returned(conn, "C1")
    first = lifecycle.start_reconditioning(conn, device_id=device, actor="t", reason="r")
    lifecycle.confirm_wipe(conn, device_id=device, nonce=first.nonce, confirmed_at=WIPED_AT,
                           actor="gateway")
    lifecycle.finish_reconditioning(conn, device_id=device, actor="t")
    lifecycle.credentials_issued(conn, device_id=device, actor="t", reason="new certificate")
    assign(conn, device)
    lifecycle.return_device(conn, device_id=device, actor="t", reason="again")
    lifecycle.start_reconditioning(conn, device_id=device, actor="t", reason="again")
    with pytest.raises(ConflictError, match="does not match the device's latest wipe request"):
        lifecycle.confirm_wipe(conn, device_id=device, nonce=first.nonce, confirmed_at=WIPED_AT,
                               actor="gateway")


def test_a_repeated_confirmation_changes_nothing(conn: Conn) -> None:
    device = returned(conn, "C1")
    wipe = lifecycle.start_reconditioning(conn, device_id=device, actor="t", reason="r")
    lifecycle.confirm_wipe(conn, device_id=device, nonce=wipe.nonce, confirmed_at=WIPED_AT,
                           actor="gateway")
    before = life(conn, device)
    later = datetime(2024, 3, 6, tzinfo=UTC)
    assert lifecycle.confirm_wipe(conn, device_id=device, nonce=wipe.nonce, confirmed_at=later,
                                  actor="gateway") == {"device_id": device,
                                                       "confirmed_at": WIPED_AT,
                                                       "credentials_revoked": False}
    assert life(conn, device) == before


def test_a_confirmation_time_without_zone_is_refused(conn: Conn) -> None:
    device = returned(conn, "C1")
    wipe = lifecycle.start_reconditioning(conn, device_id=device, actor="t", reason="r")
    with pytest.raises(InvalidInputError, match=exactly(
            f"device {device}: the wipe confirmation time 2024-03-05T09:30:00 has no time zone")):
        lifecycle.confirm_wipe(conn, device_id=device, nonce=wipe.nonce,
                               confirmed_at=WIPED_AT.replace(tzinfo=None), actor="gateway")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c, d: lifecycle.return_device(c, device_id=d, actor="t", reason="r"),
         "device {d} is in stock; only a device assigned can be returned"),
        (lambda c, d: lifecycle.start_reconditioning(c, device_id=d, actor="t", reason="r"),
         "device {d} is in stock; only a device returned can be reconditioned"),
        (lambda c, d: lifecycle.confirm_wipe(c, device_id=d, nonce="n", confirmed_at=WIPED_AT,
                                             actor="t"),
         "device {d} is in stock; only a device reconditioning can be confirmed as wiped"),
        (lambda c, d: lifecycle.finish_reconditioning(c, device_id=d, actor="t"),
         "device {d} is in stock; only a device reconditioning can be put back in stock after"
         " reconditioning"),
    ],
    ids=["return", "recondition", "confirm", "finish"],
)
def test_transitions_out_of_the_wrong_state_are_refused(conn: Conn, call: Any,
                                                         message: str) -> None:
    device = onboard(conn, "C1")
    with pytest.raises(ConflictError, match=exactly(message.format(d=device))):
        call(conn, device)
    assert state(conn, device) == ("20", "in_stock", True, False)


def test_retire_from_stock_revokes_and_unpairs_the_hub(conn: Conn) -> None:
    hub, cuff = onboard(conn, "H1", "hub"), onboard(conn, "C1")
    service.pair(conn, peripheral_id=cuff, hub_id=hub, actor="tech-1")
    revoked: list[str] = []
    assert lifecycle.retire(conn, device_id=hub, actor="tech-5", reason="water damage",
                            revoke_credentials=revoked.append) == {"device_id": hub,
                                                                   "state": "retired"}
    assert revoked == [hub]
    assert state(conn, hub) == ("20", "retired", False, False)
    assert life(conn, hub)[1:] == [
        ("retired", "tech-5", {"reason": "water damage", "previous_state": "in_stock"}),
        ("unpaired", "tech-5", {"hub": hub, "peripheral": cuff, "reason": "water damage"}),
        ("credentials_revoked", "tech-5", {"reason": "water damage", "mqtt_password": True,
                                           "certificates": True}),
    ]
    assert life(conn, cuff)[-1] == ("unpaired", "tech-5", {"hub": hub, "peripheral": cuff,
                                                           "reason": "water damage"})


def test_retire_while_reconditioning_is_allowed(conn: Conn) -> None:
    device = returned(conn, "C1")
    lifecycle.start_reconditioning(conn, device_id=device, actor="t", reason="r")
    lifecycle.retire(conn, device_id=device, actor="t", reason="does not power on")
    assert state(conn, device) == ("20", "retired", False, False)
    assert life(conn, device)[-2:] == [
        ("retired", "t", {"reason": "does not power on", "previous_state": "reconditioning"}),
        ("credentials_revoked", "t", {"reason": "does not power on", "mqtt_password": True,
                                      "certificates": False}),
    ]


def test_retire_an_assigned_device_is_refused(conn: Conn) -> None:
    device = onboard(conn, "C1")
    assign(conn, device)
    with pytest.raises(ConflictError, match=exactly(
            f"device {device} is assigned; return it before retiring it")):
        lifecycle.retire(conn, device_id=device, actor="t", reason="r")
    assert state(conn, device) == ("20", "assigned", True, False)


def test_retire_twice_is_refused(conn: Conn) -> None:
    device = onboard(conn, "C1")
    lifecycle.retire(conn, device_id=device, actor="t", reason="r")
    with pytest.raises(ConflictError, match=exactly(f"device {device} is already retired")):
        lifecycle.retire(conn, device_id=device, actor="t", reason="r")


def test_assign_a_retired_device_is_refused(conn: Conn) -> None:
    device = onboard(conn, "C1")
    lifecycle.retire(conn, device_id=device, actor="t", reason="r")
    with pytest.raises(ConflictError, match=exactly(
            f"device {device} is retired; only a device in stock can be assigned")):
        assign(conn, device)


def test_transfer_changes_the_owner_and_splits_the_history(conn: Conn) -> None:
    hub, cuff = onboard(conn, "H1", "hub"), onboard(conn, "C1")
    service.pair(conn, peripheral_id=cuff, hub_id=hub, actor="tech-1")
    assert lifecycle.transfer(conn, device_id=cuff, to_principal="2080", actor="tech-6",
                              reason="Falun needs it") == {
        "device_id": cuff, "from": "20", "to": "2080", "state": "in_stock",
        "needs_credentials": True}
    assert state(conn, cuff) == ("2080", "in_stock", False, True)
    with pytest.raises(ConflictError, match="needs new credentials"):
        service.assign(conn, SECRET, device_id=cuff, patient="p", basis="SoL", actor="tech-7")
    lifecycle.credentials_issued(conn, device_id=cuff, actor="tech-7", reason="Falun's CA")
    service.assign(conn, SECRET, device_id=cuff, patient="p", basis="SoL", actor="tech-7")
    owners = conn.execute("SELECT principal_code, valid_to IS NULL FROM device_owners"
                          " WHERE device_id = %s ORDER BY id", (cuff,)).fetchall()
    assert owners == [("20", False), ("2080", True)]
    parts = {principal: [(row["action"], row["actor"], row["detail"]) for row in rows]
             for principal, rows in lifecycle.history_by_owner(conn, cuff).items()}
    why = "Falun needs it"
    assignment = parts["2080"][2][2]["assignment"]
    assert parts == {
        "20": [
            ("onboarded", "tech-1", {"principal": "20", "model": "bpm", "serial": "C1"}),
            ("paired", "tech-1", {"hub": hub}),
            ("unpaired", "tech-6", {"hub": hub, "peripheral": cuff, "reason": why}),
            ("credentials_revoked", "tech-6", {"reason": why, "mqtt_password": True,
                                               "certificates": False}),
            ("transferred_out", "tech-6", {"to_principal": "2080", "reason": why}),
        ],
        "2080": [
            ("transferred_in", "tech-6", {"from_principal": "20", "reason": why}),
            ("credentials_issued", "tech-7", {"reason": "Falun's CA"}),
            ("assigned", "tech-7", {"assignment": assignment, "basis": "SoL",
                                    "prescribing_unit": None}),
        ],
    }


def test_history_by_owner_rows_look_like_history_rows(conn: Conn) -> None:
    device = onboard(conn, "C1")
    assert lifecycle.history_by_owner(conn, device) == {"20": service.history(conn, device)}


@pytest.mark.parametrize(
    ("prepare", "to", "error", "message"),
    [
        (assign, "2080", ConflictError,
         "device {d} is assigned; only a device in stock can be transferred"),
        (None, "20", ConflictError, "device {d} already belongs to principal 20"),
        (None, "2099", NotFoundError, "principal 2099 does not exist"),
    ],
    ids=["assigned", "same-owner", "unknown-principal"],
)
def test_transfer_refusals(conn: Conn, prepare: Any, to: str, error: type[Exception],
                           message: str) -> None:
    device = onboard(conn, "C1")
    if prepare is not None:
        prepare(conn, device)
    with pytest.raises(error, match=exactly(message.format(d=device))):
        lifecycle.transfer(conn, device_id=device, to_principal=to, actor="t", reason="r")
    assert state(conn, device)[0] == "20"


def test_an_empty_reason_is_refused(conn: Conn) -> None:
    device = onboard(conn, "C1")
    with pytest.raises(InvalidInputError, match=exactly(
            "reason must not be empty: the history records why")):
        lifecycle.retire(conn, device_id=device, actor="t", reason="  ")


def test_an_unknown_device_is_named(conn: Conn) -> None:
    with pytest.raises(NotFoundError, match=exactly("device dev-nope does not exist")):
        lifecycle.retire(conn, device_id="dev-nope", actor="t", reason="r")
    with pytest.raises(NotFoundError, match=exactly("device dev-nope does not exist")):
        lifecycle.needs_credentials(conn, "dev-nope")


def test_new_credentials_clear_the_flag(conn: Conn) -> None:
    device = onboard(conn, "C1")
    lifecycle.transfer(conn, device_id=device, to_principal="2080", actor="t", reason="r")
    assert lifecycle.needs_credentials(conn, device) is True
    lifecycle.credentials_issued(conn, device_id=device, actor="pki", reason="certificate 1f")
    assert lifecycle.needs_credentials(conn, device) is False
    assert life(conn, device)[-1] == ("credentials_issued", "pki", {"reason": "certificate 1f"})


def test_migration_backfills_owners_and_history_of_existing_devices(database_url: str) -> None:
    # Mark 0007 (and what builds on it) as applied so the others run alone, add a device,
    # then let 0007 run over it.
    held = [MIGRATION, *ON_MIGRATION]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (name text PRIMARY KEY,"
                     " applied_at timestamptz NOT NULL DEFAULT now())")
        for name in held:
            conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
    db.migrate(database_url)
    with psycopg.connect(database_url) as conn:
        service.add_principal(conn, "20", "Region Dalarna")
        device = onboard(conn, "C1")
        conn.execute("DELETE FROM schema_migrations WHERE name = ANY(%s)", (held,))
    assert db.migrate(database_url) == held
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT principal_code, valid_to FROM device_owners"
                            " WHERE device_id = %s", (device,)).fetchall() == [("20", None)]
        assert conn.execute("SELECT action, principal_code FROM device_history"
                            " WHERE device_id = %s", (device,)).fetchall() == [("onboarded", "20")]
