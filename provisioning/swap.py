"""A swap: a faulty device at a patient replaced by one from stock, in one step.

In one transaction and at one moment T, the old device's open assignment ends at T and the new
device gets an assignment for the same patient, legal basis and prescribing unit from T; the
old device goes to ``returned`` with the fault in its history, the new to ``assigned``. The
patient's series is kept by patient pseudonym, so readings of both devices stay one series;
each reading belongs to the device assigned at its own time ([valid_from, valid_to)).

When the old device is a peripheral paired with a hub, the new one takes its place at that hub
(unless it is paired already), so the hub's next reading of it is accepted. A swap delivers no
order (provisioning/orders.py) and moves no licence: both stay with their devices.
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from provisioning.errors import ConflictError, InvalidInputError
from provisioning.lifecycle import lock_device, record
from provisioning.service import Conn


def _open_assignment(conn: Conn, device_id: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, principal_code, patient_key, basis, prescribing_unit FROM assignments"
            " WHERE device_id = %s AND valid_to IS NULL FOR UPDATE", (device_id,))
        row = cur.fetchone()
    if row is None:
        raise ConflictError(f"device {device_id} is assigned but has no open assignment")
    return row


def _check_new(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Why ``new`` cannot replace ``old``, as a ConflictError naming both; else nothing."""
    if new["principal_code"] != old["principal_code"]:
        raise ConflictError(
            f"device {new['id']} belongs to principal {new['principal_code']}, not to"
            f" principal {old['principal_code']} of device {old['id']}; transfer it first")
    if new["state"] != "in_stock":
        raise ConflictError(f"device {new['id']} is {new['state'].replace('_', ' ')}; only a"
                            f" device in stock can replace device {old['id']}")
    if new["needs_credentials"]:
        raise ConflictError(f"device {new['id']} needs new credentials before it can replace"
                            f" device {old['id']} (aidlink device reissue)")


def _take_over_hub(conn: Conn, old: dict[str, Any], new: dict[str, Any], actor: str,
                   reason: str) -> str | None:
    """Pair ``new`` with the hub ``old`` is paired with, if ``new`` has none; the hub."""
    hub = conn.execute("SELECT hub_id FROM pairings WHERE peripheral_id = %s"
                       " AND unpaired_at IS NULL", (old["id"],)).fetchone()
    taken = conn.execute("SELECT 1 FROM pairings WHERE peripheral_id = %s"
                         " AND unpaired_at IS NULL", (new["id"],)).fetchone()
    if hub is None or taken is not None:
        return None
    conn.execute("UPDATE pairings SET unpaired_at = clock_timestamp()"
                 " WHERE peripheral_id = %s AND unpaired_at IS NULL", (old["id"],))
    conn.execute("INSERT INTO pairings (hub_id, peripheral_id) VALUES (%s, %s)",
                 (hub[0], new["id"]))
    record(conn, old, "unpaired", actor, hub=hub[0], peripheral=old["id"], reason=reason)
    record(conn, new, "paired", actor, hub=hub[0], reason=reason)
    return str(hub[0])


def swap(conn: Conn, *, old_id: str, new_id: str, fault: str, actor: str,
         reason: str | None = None) -> dict[str, Any]:
    """Replace the assigned device ``old_id`` by ``new_id`` from stock; what changed."""
    if not fault.strip():
        raise InvalidInputError("fault must not be empty: the old device's history records it")
    if old_id == new_id:
        raise InvalidInputError(f"device {old_id} cannot replace itself")
    fault = fault.strip()
    why = (reason or "").strip() or f"swapped for device {new_id}: {fault}"
    with conn.transaction():
        # Both locked in id order, so two swaps over the same pair cannot deadlock.
        locked = {device_id: lock_device(conn, device_id)
                  for device_id in sorted((old_id, new_id))}
        old, new = locked[old_id], locked[new_id]
        if old["state"] != "assigned":
            raise ConflictError(f"device {old_id} is {old['state'].replace('_', ' ')}; only an"
                                " assigned device can be swapped")
        _check_new(old, new)
        before = _open_assignment(conn, old_id)
        # One moment for both ends: no reading time falls between the two assignments.
        # clock_timestamp(), since the old assignment may have begun in this transaction.
        ended = conn.execute("UPDATE assignments SET valid_to = clock_timestamp()"
                             " WHERE id = %s RETURNING valid_to", (before["id"],)).fetchone()
        assert ended is not None
        moment = ended[0]
        created = conn.execute(
            "INSERT INTO assignments (device_id, principal_code, patient_key, basis,"
            " prescribing_unit, assigned_by, valid_from) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " RETURNING id",
            (new_id, before["principal_code"], before["patient_key"], before["basis"],
             before["prescribing_unit"], actor, moment)).fetchone()
        assert created is not None
        conn.execute("UPDATE devices SET state = 'returned' WHERE id = %s", (old_id,))
        conn.execute("UPDATE devices SET state = 'assigned' WHERE id = %s", (new_id,))
        record(conn, old, "returned", actor, assignment=before["id"], reason=why, fault=fault,
               replaced_by=new_id)
        record(conn, new, "assigned", actor, assignment=created[0], basis=before["basis"],
               prescribing_unit=before["prescribing_unit"], replaces=old_id, reason=why)
        hub = _take_over_hub(conn, old, new, actor, why)
    return {"old": {"device_id": old_id, "state": "returned", "assignment_id": before["id"],
                    "valid_to": moment, "fault": fault},
            "new": {"device_id": new_id, "state": "assigned", "assignment_id": created[0],
                    "valid_from": moment, "basis": before["basis"],
                    "prescribing_unit": before["prescribing_unit"]},
            **({"hub": hub} if hub else {})}
