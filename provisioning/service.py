"""The provisioning service layer: one place for the rules, used by the CLI and the API."""

from __future__ import annotations

import re
import secrets
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from provisioning import orders, participation, pilots
from provisioning.errors import ConflictError, InvalidInputError, NotFoundError
from provisioning.passwords import hash_password, new_password
from provisioning.patients import patient_key
from provisioning.policy import PolicyError, check_device, current_policy

_CODE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_TEXT = re.compile(r"^[A-Za-z0-9 ._:/+-]{1,64}$")
# DC-09 account numbers: 3-16 hexadecimal characters (SIA DC-09 #acct).
_ACCOUNT = re.compile(r"^[0-9A-Fa-f]{3,16}$")
_VERSION = re.compile(r"^[0-9]+(\.[0-9]+){0,3}$")
BASES = ("HSL", "SoL")
_PRINCIPAL = "code, name, device_auth, created_at"
DEVICE_AUTH = ("mtls", "password")
# As long as the API's reason field allows, so that the CLI and the API refuse the same text.
REASON_MAX = 500

Conn = psycopg.Connection[Any]


def _check(pattern: re.Pattern[str], value: str, field: str) -> str:
    if not pattern.fullmatch(value):
        raise InvalidInputError(f"{field} {value!r} is not valid (pattern {pattern.pattern})")
    return value


def _history(conn: Conn, device_id: str, action: str, actor: str, **detail: Any) -> None:
    conn.execute(
        "INSERT INTO device_history (device_id, action, actor, detail) VALUES (%s, %s, %s, %s)",
        (device_id, action, actor, Jsonb(detail)),
    )


def _reason(reason: str | None) -> dict[str, str]:
    """The optional reason as history detail: nothing when not given, else the stripped text,
    which must not be empty (an empty one says nothing about why)."""
    if reason is None:
        return {}
    if not reason.strip() or len(reason.strip()) > REASON_MAX:
        raise InvalidInputError(f"reason {reason!r} must have 1 to {REASON_MAX} characters")
    return {"reason": reason.strip()}


def add_principal(conn: Conn, code: str, name: str, device_auth: str = "mtls", *,
                  participating: bool = True, participates_from: datetime | None = None,
                  actor: str | None = None) -> dict[str, Any]:
    """Register a principal (region or municipality); its policy requires mTLS by default.

    It participates from now unless ``participates_from`` says when, or ``participating`` is
    false: then it is set up later by ``participation.join``.
    """
    _check(_CODE, code, "principal code")
    if not name.strip():
        raise InvalidInputError("principal name must not be empty")
    if device_auth not in DEVICE_AUTH:
        raise InvalidInputError(f"device auth {device_auth!r} is not one of {DEVICE_AUTH}")
    if not participating and participates_from is not None:
        raise InvalidInputError(f"principal {code} cannot both not participate and participate"
                                f" from {participates_from.isoformat()}")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "INSERT INTO principals (code, name, device_auth, participates_from, joined_at,"
            " joined_by) VALUES (%s, %s, %s,"
            " CASE WHEN %s THEN coalesce(%s, now()) END, CASE WHEN %s THEN now() END, %s)"
            f" ON CONFLICT (code) DO NOTHING RETURNING {_PRINCIPAL}",
            (code, name.strip(), device_auth, participating, participates_from, participating,
             actor if participating else None),
        )
        row = cur.fetchone()
    if row is None:
        raise ConflictError(f"principal {code} already exists")
    return row


def get_principal(conn: Conn, code: str) -> dict[str, Any]:
    """One principal, or NotFoundError naming it."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_PRINCIPAL} FROM principals WHERE code = %s", (code,))
        row = cur.fetchone()
    if row is None:
        raise NotFoundError(f"principal {code} does not exist")
    return row


def list_principals(conn: Conn) -> list[dict[str, Any]]:
    """All principals by code."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_PRINCIPAL} FROM principals ORDER BY code")
        return cur.fetchall()


def onboard_device(
    conn: Conn, *, principal: str, model: str, serial: str, actor: str,
    alarm_account: str | None = None, firmware_version: str | None = None,
    unit: str | None = None, reason: str | None = None,
) -> dict[str, Any]:
    """Register a device for a principal; password credentials where its policy allows them.

    The password is returned once and only its hash is kept. ``alarm_account`` is the account
    an SIA DC-09 alarm unit reports under; ``unit`` the unit it is for (a model's pilot may be
    limited to units); ``reason``, when given, is recorded in the history. The principal must
    participate and the model's pilot, if any, allow it.
    """
    _check(_TEXT, model, "model")
    _check(_TEXT, serial, "serial")
    if alarm_account is not None:
        _check(_ACCOUNT, alarm_account, "alarm account")
    if firmware_version is not None:
        _check(_VERSION, firmware_version, "firmware version")
    if unit is not None and not 1 <= len(unit) <= 64:
        raise InvalidInputError(f"unit {unit!r} must have 1 to 64 characters")
    why = _reason(reason)
    owner = get_principal(conn, principal)
    participation.require_participating(conn, principal)
    rules = current_policy(conn, principal)
    refused = check_device(rules, model, firmware_version)
    if refused:
        raise PolicyError(f"device {model} {serial} refused: " + "; ".join(refused))
    device_id = "dev-" + secrets.token_hex(6)
    password = new_password() if owner["device_auth"] == "password" else None
    try:
        with conn.transaction():
            pilots.check_onboarding(conn, model=model, principal=principal, unit=unit)
            conn.execute(
                "INSERT INTO devices (id, principal_code, client_id, model, serial,"
                " mqtt_password_hash, alarm_account, firmware_version)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (device_id, principal, device_id, model, serial,
                 None if password is None else hash_password(password),
                 None if alarm_account is None else alarm_account.upper(), firmware_version),
            )
            _history(conn, device_id, "onboarded", actor, principal=principal, model=model,
                     serial=serial, **({} if unit is None else {"unit": unit}), **why)
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name == "devices_alarm_account_key":
            raise ConflictError(f"alarm account {alarm_account} is already in use") from exc
        raise ConflictError(f"a device {model} with serial {serial} is already onboarded") from exc
    result: dict[str, Any] = {
        "device_id": device_id,
        "client_id": device_id,
        "principal": principal,
        "model": model,
        "serial": serial,
        "state": "in_stock",
    }
    if alarm_account is not None:
        result["alarm_account"] = alarm_account.upper()
    if firmware_version is not None:
        result["firmware_version"] = firmware_version
    if password is not None:
        result["mqtt_username"] = device_id
        result["mqtt_password"] = password
    return result


def get_device(conn: Conn, device_id: str, principal: str | None = None) -> dict[str, Any]:
    """One device; with ``principal`` given, a device of another principal is not found."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, principal_code, client_id, model, serial, state, created_at"
            " FROM devices WHERE id = %s AND (%s::text IS NULL OR principal_code = %s)",
            (device_id, principal, principal),
        )
        row = cur.fetchone()
    if row is None:
        raise NotFoundError(f"device {device_id} does not exist")
    return row


def pair(conn: Conn, *, peripheral_id: str, hub_id: str, actor: str,
         reason: str | None = None) -> dict[str, Any]:
    """Pair a peripheral with a hub (ending any earlier pairing); both of one principal.
    ``reason``, when given, is recorded in the history."""
    why = _reason(reason)
    if peripheral_id == hub_id:
        raise InvalidInputError(f"device {hub_id} cannot be paired with itself")
    with conn.transaction():
        peripheral = get_device(conn, peripheral_id)
        hub = get_device(conn, hub_id)
        if peripheral["principal_code"] != hub["principal_code"]:
            raise ConflictError(
                f"device {peripheral_id} (principal {peripheral['principal_code']}) cannot pair"
                f" with hub {hub_id} of principal {hub['principal_code']}"
            )
        for row in (peripheral, hub):
            if row["state"] == "retired":
                raise ConflictError(f"device {row['id']} is retired")
        conn.execute(
            "UPDATE pairings SET unpaired_at = now()"
            " WHERE peripheral_id = %s AND unpaired_at IS NULL",
            (peripheral_id,),
        )
        conn.execute(
            "INSERT INTO pairings (hub_id, peripheral_id) VALUES (%s, %s)", (hub_id, peripheral_id)
        )
        _history(conn, peripheral_id, "paired", actor, hub=hub_id, **why)
    return {"peripheral_id": peripheral_id, "hub_id": hub_id}


def assign(
    conn: Conn,
    secret: bytes,
    *,
    device_id: str,
    patient: str,
    basis: str,
    actor: str,
    prescribing_unit: str | None = None,
    order: str | None = None,
    until: date | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Assign a device in stock to a patient from now on, under HSL or SoL; it delivers
    ``order``, or else the patient's oldest open order it fits (provisioning/orders.py).

    ``until`` is the planned last day (the devices centre's calendar), today or later; the
    assignment still ends only when the device is returned. ``reason``, when given, is
    recorded in the history.
    """
    if basis not in BASES:
        raise InvalidInputError(f"basis {basis!r} must be one of {', '.join(BASES)}")
    why = _reason(reason)
    with conn.transaction():
        if until is not None:
            # Today as the database sees it, in the same transaction as valid_from = now(),
            # so this check and the table's CHECK never disagree around midnight.
            today = conn.execute("SELECT (now() AT TIME ZONE %s)::date",
                                 (participation.CENTRE_ZONE.key,)).fetchone()
            assert today is not None
            if until < today[0]:
                raise InvalidInputError(f"until {until.isoformat()} is before today"
                                        f" {today[0].isoformat()}: a planned end cannot be past")
        # Lock first, then read: a concurrent assignment is seen, not raced.
        conn.execute("SELECT 1 FROM devices WHERE id = %s FOR UPDATE", (device_id,))
        device = get_device(conn, device_id)
        if device["state"] != "in_stock":
            raise ConflictError(
                f"device {device_id} is {device['state']}; only a device in stock can be assigned"
            )
        fresh = conn.execute("SELECT needs_credentials FROM devices WHERE id = %s",
                             (device_id,)).fetchone()
        if fresh is not None and fresh[0]:
            raise ConflictError(f"device {device_id} needs new credentials before it can be "
                                "assigned (aidlink device reissue)")
        key = patient_key(secret, device["principal_code"], patient)
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "INSERT INTO assignments (device_id, principal_code, patient_key, basis,"
                " prescribing_unit, assigned_by, planned_until)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id, valid_from",
                (device_id, device["principal_code"], key, basis, prescribing_unit, actor,
                 until),
            )
            row = cur.fetchone()
        assert row is not None
        delivered = orders.fulfil_on_assign(
            conn, assignment={"device_id": device_id, "patient_key": key, **row},
            principal=device["principal_code"], actor=actor, order_id=order)
        conn.execute("UPDATE devices SET state = 'assigned' WHERE id = %s", (device_id,))
        _history(conn, device_id, "assigned", actor, assignment=row["id"], basis=basis,
                 prescribing_unit=prescribing_unit,
                 **({"order": delivered} if delivered else {}),
                 **({} if until is None else {"planned_until": until.isoformat()}), **why)
    return {
        "assignment_id": row["id"],
        "device_id": device_id,
        "principal": device["principal_code"],
        "patient": patient,
        "basis": basis,
        "valid_from": row["valid_from"],
        # ISO text, as the reports give dates: the project's JSON writer takes no bare dates.
        **({} if until is None else {"planned_until": until.isoformat()}),
        **({"order_id": delivered} if delivered else {}),
    }


def history(conn: Conn, device_id: str) -> list[dict[str, Any]]:
    """A device's life, oldest first."""
    get_device(conn, device_id)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT at, action, actor, detail FROM device_history WHERE device_id = %s ORDER BY id",
            (device_id,),
        )
        return [{"device_id": device_id, **row} for row in cur.fetchall()]


def client_of_alarm_account(conn: Conn, account: str) -> str | None:
    """The client id of the DC-09 alarm unit reporting under an account, if registered."""
    row = conn.execute(
        "SELECT client_id FROM devices WHERE alarm_account = %s AND state <> 'retired'",
        (account.upper(),),
    ).fetchone()
    return None if row is None else str(row[0])
