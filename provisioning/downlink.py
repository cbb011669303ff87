"""Wipe commands handed to devices on their down topic, and removed once they are done.

A wipe request (provisioning.lifecycle.start_reconditioning) is kept in wipe_requests until
the broker has accepted its command, QoS 1 and **retained**, so that a device that is offline
when reconditioning starts finds it when it next connects:

    topic   aidlink/v1/{client_id}/down/wipe
    payload {"nonce": "<the request's nonce>", "device": "<device id>"}

Once the wipe is confirmed (or the device left reconditioning without a confirmation, e.g.
retired), an empty retained payload on the same topic removes the command from the broker,
so the device, reused later under the same client id, never sees the old wipe again.

Whatever starts reconditioning may publish at once (the CLI does when it reaches the broker);
the round beside the gateway (gateway.renewal_thread) publishes whatever is still pending.
``published_at`` and ``cleared_at`` record what the broker accepted; anything it did not is
tried again next round.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from provisioning.lifecycle import Conn, wipe_command

# Publishes one retained QoS 1 message; whether the broker accepted it.
Publish = Callable[[str, bytes], bool]
PUBLISHED, CLEARED = "wipe_published", "wipe_cleared"


def _pending(conn: Conn, device_id: str | None) -> list[dict[str, Any]]:
    """Requests whose command must go out (the latest, unconfirmed one of a device still in
    reconditioning) or must be removed from the broker, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT w.id, w.device_id, d.client_id, d.principal_code, w.nonce,"
            " w.published_at IS NULL AS publish"
            " FROM wipe_requests w JOIN devices d ON d.id = w.device_id"
            " WHERE (%(device)s::text IS NULL OR w.device_id = %(device)s)"
            " AND ((w.published_at IS NULL AND w.confirmed_at IS NULL"
            "   AND d.state = 'reconditioning'"
            "   AND w.id = (SELECT max(l.id) FROM wipe_requests l"
            "    WHERE l.device_id = w.device_id))"
            "  OR (w.published_at IS NOT NULL AND w.cleared_at IS NULL"
            "   AND (w.confirmed_at IS NOT NULL OR d.state <> 'reconditioning'"
            "    OR w.id <> (SELECT max(l.id) FROM wipe_requests l"
            "     WHERE l.device_id = w.device_id))))"
            " ORDER BY w.id",
            {"device": device_id},
        )
        return cur.fetchall()


def deliver_wipes(conn: Conn, publish: Publish, *, actor: str,
                  device_id: str | None = None) -> list[dict[str, Any]]:
    """Publish every pending wipe command and remove every finished one (only the device's
    with ``device_id``); each accepted step commits on its own and enters the history."""
    results = []
    for row in _pending(conn, device_id):
        command = wipe_command(row["device_id"], row["client_id"], row["nonce"])
        # Empty and retained: the broker drops the retained command it held on the topic.
        payload = command.payload.encode() if row["publish"] else b""
        accepted = publish(command.topic, payload)
        action = PUBLISHED if row["publish"] else CLEARED
        if accepted:
            conn.execute(
                "UPDATE wipe_requests SET"
                " published_at = CASE WHEN %(publish)s THEN clock_timestamp()"
                "  ELSE published_at END,"
                " cleared_at = CASE WHEN %(publish)s THEN cleared_at"
                "  ELSE clock_timestamp() END"
                " WHERE id = %(id)s",
                {"publish": row["publish"], "id": row["id"]})
            conn.execute(
                "INSERT INTO device_history (device_id, principal_code, action, actor, detail)"
                " VALUES (%s, %s, %s, %s, %s)",
                (row["device_id"], row["principal_code"], action, actor,
                 Jsonb({"topic": command.topic, "retained": True,
                        "reason": "wipe command delivered" if row["publish"]
                        else "wipe done; retained command removed"})),
            )
        conn.commit()
        results.append({"device_id": row["device_id"], "topic": command.topic,
                        "action": action, "published": accepted})
    return results
