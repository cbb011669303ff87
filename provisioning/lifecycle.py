"""A device's life after assignment: return, reconditioning with a wipe, retirement, transfer.

States: in_stock -> assigned -> returned -> reconditioning -> in_stock, and retired from any
state but assigned. Every transition is a device_history row carrying who, when, why (the
``reason`` in its detail) and the principal that owned the device at the time.

Reconditioning keeps the device's credentials until its wipe is confirmed: with them revoked
the broker would shut the device out before it could receive the wipe command or answer it.
The confirmation (by the device through the gateway, or by a technician who wiped it by hand)
revokes them in the same transaction, and finishing revokes whatever is left, so a device
back in stock never holds its old credentials.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from gateway.ingest.topics import down_topic
from provisioning import service
from provisioning.errors import ConflictError, InvalidInputError, NotFoundError

Conn = psycopg.Connection[Any]
# Revokes a device's certificates (the PKI module's job), given the device id.
RevokeHook = Callable[[str], None]
# The RFC 5280 reason under which reconditioning revokes a device's certificates.
RECONDITION_REVOCATION = "superseded"


@dataclass(frozen=True, slots=True)
class Wipe:
    """The down-topic command asking a device to erase itself, published retained with QoS 1
    (provisioning.downlink keeps it pending until the broker has it)."""

    device_id: str
    nonce: str
    topic: str
    payload: str


def wipe_command(device_id: str, client_id: str, nonce: str) -> Wipe:
    """The wipe command of a request.

    topic   aidlink/v1/{client_id}/down/wipe
    payload {"nonce": "<the request's nonce>", "device": "<device id>"}
    """
    payload = json.dumps({"nonce": nonce, "device": device_id}, separators=(",", ":"))
    return Wipe(device_id=device_id, nonce=nonce, topic=down_topic(client_id, "wipe"),
                payload=payload)


def lock_device(conn: Conn, device_id: str) -> dict[str, Any]:
    """The device row, locked for this transaction, or NotFoundError naming it."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, principal_code, client_id, state, model, serial, mqtt_password_hash,"
            " needs_credentials, article_number, individual_number"
            " FROM devices WHERE id = %s FOR UPDATE",
            (device_id,),
        )
        row = cur.fetchone()
    if row is None:
        raise NotFoundError(f"device {device_id} does not exist")
    return row


def record(conn: Conn, device: dict[str, Any], action: str, actor: str, **detail: Any) -> None:
    """Append a history row for a locked device, under the principal that owns it now."""
    conn.execute(
        "INSERT INTO device_history (device_id, principal_code, action, actor, detail)"
        " VALUES (%s, %s, %s, %s, %s)",
        (device["id"], device["principal_code"], action, actor, Jsonb(detail)),
    )


def require_reason(reason: str) -> str:
    """The reason, stripped; InvalidInputError if empty, as every transition says why."""
    if not reason.strip():
        raise InvalidInputError("reason must not be empty: the history records why")
    return reason.strip()


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _set_state(conn: Conn, device: dict[str, Any], state: str) -> None:
    conn.execute("UPDATE devices SET state = %s WHERE id = %s", (state, device["id"]))


def _end_pairings(conn: Conn, device: dict[str, Any], actor: str, reason: str) -> None:
    # The device may be either end: a peripheral of a hub, or the hub of peripherals.
    rows = conn.execute(
        "UPDATE pairings SET unpaired_at = clock_timestamp()"
        " WHERE (peripheral_id = %s OR hub_id = %s) AND unpaired_at IS NULL"
        " RETURNING hub_id, peripheral_id",
        (device["id"], device["id"]),
    ).fetchall()
    for hub, peripheral in rows:
        # Both ends' histories show it; a pairing never crosses principals, so one owner.
        for end in (hub, peripheral):
            record(conn, {"id": end, "principal_code": device["principal_code"]}, "unpaired",
                   actor, hub=hub, peripheral=peripheral, reason=reason)


def _revoke(conn: Conn, device: dict[str, Any], actor: str, reason: str,
            revoke_credentials: RevokeHook | None) -> None:
    conn.execute("UPDATE devices SET mqtt_password_hash = NULL WHERE id = %s", (device["id"],))
    record(conn, device, "credentials_revoked", actor, reason=reason,
           mqtt_password=device["mqtt_password_hash"] is not None,
           certificates=revoke_credentials is not None)
    # Last, so that a failed revocation rolls the whole transition back for a retry.
    if revoke_credentials is not None:
        revoke_credentials(device["id"])


def _expect(device: dict[str, Any], states: tuple[str, ...], doing: str) -> None:
    if device["state"] not in states:
        allowed = " or ".join(s.replace("_", " ") for s in states)
        raise ConflictError(
            f"device {device['id']} is {device['state'].replace('_', ' ')}; only a device"
            f" {allowed} can be {doing}"
        )


def return_device(conn: Conn, *, device_id: str, actor: str, reason: str,
                  fault: str | None = None) -> dict[str, Any]:
    """Take an assigned device back: its assignment ends now and it waits for reconditioning."""
    reason = require_reason(reason)
    with conn.transaction():
        device = lock_device(conn, device_id)
        _expect(device, ("assigned",), "returned")
        # clock_timestamp(): an assignment made earlier in this transaction still ends after
        # it began (assignments demand valid_to > valid_from).
        row = conn.execute(
            "UPDATE assignments SET valid_to = clock_timestamp()"
            " WHERE device_id = %s AND valid_to IS NULL RETURNING id, valid_to",
            (device_id,),
        ).fetchone()
        if row is None:
            raise ConflictError(f"device {device_id} is assigned but has no open assignment")
        _set_state(conn, device, "returned")
        record(conn, device, "returned", actor, assignment=row[0], reason=reason, fault=fault)
    return {"device_id": device_id, "state": "returned", "assignment_id": row[0],
            "valid_to": row[1], "fault": fault}


def _revoke_in_registry(conn: Conn, device: dict[str, Any], actor: str, reason: str) -> bool:
    """Revoke every certificate and the MQTT password of a locked device in the registry;
    whether there was anything to revoke.

    Revocation needs no CA key: the next broker sync signs the CRLs from these rows and
    rewrites the password file and the ACL without the device, so the gateway, which holds
    no CA passphrase, can revoke at a wipe confirmation too.
    """
    serials = [str(row[0]) for row in conn.execute(
        "UPDATE certificates SET revoked_at = clock_timestamp(), revocation_reason = %s"
        " WHERE device_id = %s AND revoked_at IS NULL RETURNING serial",
        (RECONDITION_REVOCATION, device["id"]),
    ).fetchall()]
    password = conn.execute(
        "UPDATE devices SET mqtt_password_hash = NULL"
        " WHERE id = %s AND mqtt_password_hash IS NOT NULL RETURNING id", (device["id"],),
    ).fetchone() is not None
    if not serials and not password:
        return False
    record(conn, device, "credentials_revoked", actor, reason=reason, mqtt_password=password,
           certificates=sorted(serials), revocation_reason=RECONDITION_REVOCATION)
    return True


def start_reconditioning(conn: Conn, *, device_id: str, actor: str, reason: str) -> Wipe:
    """Unpair a returned device and request a wipe; the command to deliver.

    The device keeps its credentials, only to receive the wipe and confirm it; the command
    stays pending in wipe_requests until the broker holds it (provisioning.downlink).
    """
    reason = require_reason(reason)
    nonce = secrets.token_urlsafe(24)
    with conn.transaction():
        device = lock_device(conn, device_id)
        _expect(device, ("returned",), "reconditioned")
        _set_state(conn, device, "reconditioning")
        record(conn, device, "reconditioning_started", actor, reason=reason)
        _end_pairings(conn, device, actor, reason)
        conn.execute(
            "INSERT INTO wipe_requests (device_id, nonce, requested_by) VALUES (%s, %s, %s)",
            (device_id, nonce, actor),
        )
        record(conn, device, "wipe_requested", actor, reason=reason)
    return wipe_command(device_id, device["client_id"], nonce)


def confirm_wipe(conn: Conn, *, device_id: str, nonce: str, confirmed_at: datetime,
                 actor: str, reason: str = "the device confirmed the wipe") -> dict[str, Any]:
    """Record the confirmation of the device's latest wipe request and revoke its credentials
    in the same transaction; a repeat changes nothing."""
    if confirmed_at.tzinfo is None:
        raise InvalidInputError(f"device {device_id}: the wipe confirmation time"
                                f" {confirmed_at.isoformat()} has no time zone")
    reason = require_reason(reason)
    with conn.transaction():
        device = lock_device(conn, device_id)
        _expect(device, ("reconditioning",), "confirmed as wiped")
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT id, nonce, confirmed_at FROM wipe_requests WHERE device_id = %s"
                " ORDER BY id DESC LIMIT 1",
                (device_id,),
            )
            request = cur.fetchone()
        # Only the latest request counts: an older nonce is a replay of an earlier wipe.
        if request is None or not secrets.compare_digest(request["nonce"], nonce):
            raise ConflictError(
                f"device {device_id}: the wipe confirmation's nonce does not match the device's"
                " latest wipe request; only a confirmation of that request counts"
            )
        revoked = False
        if request["confirmed_at"] is None:
            conn.execute(
                "UPDATE wipe_requests SET confirmed_at = %s, confirmed_by = %s,"
                " recorded_at = clock_timestamp() WHERE id = %s",
                (confirmed_at, actor, request["id"]),
            )
            record(conn, device, "wipe_confirmed", actor, confirmed_at=_utc(confirmed_at),
                   reason=reason)
            request["confirmed_at"] = confirmed_at
            # The device needed its credentials only to receive the wipe and answer it.
            revoked = _revoke_in_registry(conn, device, actor, "wipe confirmed")
    return {"device_id": device_id, "confirmed_at": request["confirmed_at"],
            "credentials_revoked": revoked}


def finish_reconditioning(conn: Conn, *, device_id: str, actor: str) -> dict[str, Any]:
    """Put a wiped device back in stock without credentials; it needs new ones before reuse."""
    with conn.transaction():
        device = lock_device(conn, device_id)
        _expect(device, ("reconditioning",), "put back in stock after reconditioning")
        row = conn.execute(
            "SELECT confirmed_at FROM wipe_requests WHERE device_id = %s"
            " ORDER BY id DESC LIMIT 1",
            (device_id,),
        ).fetchone()
        if row is None or row[0] is None:
            raise ConflictError(
                f"device {device_id}: reconditioning cannot finish before the device confirms"
                " its wipe"
            )
        # The confirmation revoked the credentials; anything issued since goes too, as a
        # device in stock holds none of its old ones.
        _revoke_in_registry(conn, device, actor, "back in stock after reconditioning")
        conn.execute("UPDATE devices SET state = 'in_stock', needs_credentials = true"
                     " WHERE id = %s", (device_id,))
        record(conn, device, "reconditioned", actor, wiped_at=_utc(row[0]),
               needs_credentials=True, reason="wipe confirmed; back in stock")
    return {"device_id": device_id, "state": "in_stock", "needs_credentials": True}


def retire(conn: Conn, *, device_id: str, actor: str, reason: str,
           revoke_credentials: RevokeHook | None = None) -> dict[str, Any]:
    """Take a device out of service for good: credentials revoked, pairings ended."""
    reason = require_reason(reason)
    with conn.transaction():
        device = lock_device(conn, device_id)
        if device["state"] == "assigned":
            raise ConflictError(f"device {device_id} is assigned; return it before retiring it")
        if device["state"] == "retired":
            raise ConflictError(f"device {device_id} is already retired")
        _set_state(conn, device, "retired")
        record(conn, device, "retired", actor, reason=reason, previous_state=device["state"])
        _end_pairings(conn, device, actor, reason)
        _revoke(conn, device, actor, reason, revoke_credentials)
    return {"device_id": device_id, "state": "retired"}


def transfer(conn: Conn, *, device_id: str, to_principal: str, actor: str, reason: str,
             revoke_credentials: RevokeHook | None = None) -> dict[str, Any]:
    """Give a device in stock to another principal; it needs credentials from the new one."""
    reason = require_reason(reason)
    with conn.transaction():
        device = lock_device(conn, device_id)
        service.get_principal(conn, to_principal)
        _expect(device, ("in_stock",), "transferred")
        source = device["principal_code"]
        if source == to_principal:
            raise ConflictError(f"device {device_id} already belongs to principal {source}")
        # Pairings cannot cross principals, and credentials follow the old principal's CA
        # and policy, so neither survives the transfer.
        _end_pairings(conn, device, actor, reason)
        _revoke(conn, device, actor, reason, revoke_credentials)
        record(conn, device, "transferred_out", actor, to_principal=to_principal, reason=reason)
        conn.execute("UPDATE devices SET principal_code = %s, needs_credentials = true"
                     " WHERE id = %s", (to_principal, device_id))
        device["principal_code"] = to_principal
        record(conn, device, "transferred_in", actor, from_principal=source, reason=reason)
    return {"device_id": device_id, "from": source, "to": to_principal, "state": "in_stock",
            "needs_credentials": True}


def needs_credentials(conn: Conn, device_id: str) -> bool:
    """Whether the device must get new credentials before it may be assigned again."""
    row = conn.execute("SELECT needs_credentials FROM devices WHERE id = %s",
                       (device_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"device {device_id} does not exist")
    return bool(row[0])


def credentials_issued(conn: Conn, *, device_id: str, actor: str, reason: str) -> None:
    """Record that a device got new credentials (for the re-issuing code to call)."""
    reason = require_reason(reason)
    with conn.transaction():
        device = lock_device(conn, device_id)
        conn.execute("UPDATE devices SET needs_credentials = false WHERE id = %s", (device_id,))
        record(conn, device, "credentials_issued", actor, reason=reason)


def history_by_owner(conn: Conn, device_id: str) -> dict[str, list[dict[str, Any]]]:
    """A device's history split by the principal that owned it, each part oldest first."""
    service.get_device(conn, device_id)
    parts: dict[str, list[dict[str, Any]]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT principal_code, at, action, actor, detail FROM device_history"
            " WHERE device_id = %s ORDER BY id",
            (device_id,),
        )
        for row in cur:
            principal = row.pop("principal_code")
            parts.setdefault(principal, []).append({"device_id": device_id, **row})
    return parts
