"""Certificates renewed before they expire, and handed to the devices on their down topic.

Renewal certifies the key the device already holds (the public key of its current
certificate), so no private key travels: the server never had the key of a device that
brought a CSR, and a key it generated went out once, in the provisioning bundle. A device
whose key the current policy no longer allows (another algorithm or size) cannot be renewed
that way; it is reported, and needs `aidlink device renew ID --csr FILE` with a new key.

The command, QoS 1 and retained, so that a device that was offline or reconnects without a
session still finds its newest certificate (it compares ``serial`` with the one it uses):

    topic   aidlink/v1/{client_id}/down/certificate
    payload {"v": 1, "serial": "<hex>", "not_after": "<RFC 3339>",
             "certificate_pem": "<PEM>", "ca_chain_pem": "<PEM, intermediate then root>"}

The previous certificate stays valid until it expires, so a device that has not switched yet
keeps working; a renewed certificate that could not be published is sent again next round.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from provisioning import pki
from provisioning.ca import Conn, chain_pem, now_or
from provisioning.errors import ProvisioningError
from provisioning.policy import Policy, check_device, current_policy

COMMAND = "certificate"
DELIVERED = "certificate_delivered"

Publish = Callable[[str, bytes], bool]


@dataclass(frozen=True, slots=True)
class Delivery:
    """A current certificate still to be handed to its device."""

    device_id: str
    client_id: str
    serial: str
    not_after: datetime
    certificate_pem: str
    chain_pem: str

    @property
    def topic(self) -> str:
        """The device's down topic for certificates."""
        return f"aidlink/v1/{self.client_id}/down/{COMMAND}"

    def payload(self) -> bytes:
        """The command document (see the module's description)."""
        return json.dumps({"v": 1, "serial": self.serial,
                           "not_after": self.not_after.isoformat(),
                           "certificate_pem": self.certificate_pem,
                           "ca_chain_pem": self.chain_pem}).encode()


def renew_due(conn: Conn, passphrase: bytes, *, actor: str, now: datetime | None = None,
              principal: str | None = None
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Renew every certificate inside its policy's renewal window, keeping the device's key
    (only the devices of ``principal``, when given).

    Each renewal commits on its own; returns the renewed ones (with the new certificate's
    PEM) and the refused ones, with why, each in the order they were due. A device whose
    model its principal's current policy no longer allows, or whose firmware (as
    registered, or last reported) is below the policy's minimum, is not renewed: it is
    refused with the rule named as ``aidlink policy check`` names it.
    """
    renewed, refused = [], []
    due_rows = [due for due in pki.due_for_renewal(conn, now)
                if principal is None or due["principal"] == principal]
    broken = _policy_reasons(conn, [due["device_id"] for due in due_rows])
    for due in due_rows:
        reasons = broken.get(due["device_id"])
        if reasons:
            refused.append({"device_id": due["device_id"], "serial": due["serial"],
                            "reason": "not renewed: " + "; ".join(reasons)})
            continue
        try:
            issued = pki.renew(conn, passphrase, device_id=due["device_id"], keep_key=True,
                               actor=actor, now=now)
        except ProvisioningError as exc:
            conn.rollback()
            refused.append({"device_id": due["device_id"], "serial": due["serial"],
                            "reason": str(exc)})
            continue
        conn.commit()
        renewed.append({"device_id": due["device_id"], "replaces": due["serial"],
                        "serial": issued.serial, "not_after": issued.not_after,
                        "certificate_pem": issued.certificate_pem})
    return renewed, refused


def _policy_reasons(conn: Conn, device_ids: list[str]) -> dict[str, list[str]]:
    """Why each device breaks its principal's current policy on model or firmware (the
    rules a certificate cannot fix), by device; devices that comply are left out."""
    if not device_ids:
        return {}
    rows = conn.execute(
        "SELECT id, principal_code, model, firmware_version FROM devices WHERE id = ANY(%s)",
        (device_ids,),
    ).fetchall()
    policies: dict[str, Policy] = {}
    reasons: dict[str, list[str]] = {}
    for device_id, principal, model, firmware in rows:
        if principal not in policies:
            policies[principal] = current_policy(conn, principal)
        found = check_device(policies[principal], model, firmware)
        if found:
            reasons[device_id] = found
    return reasons


def pending_deliveries(conn: Conn) -> list[Delivery]:
    """Current certificates that replaced another and have not yet reached their device.

    Not to a device being reconditioned: it is about to be erased and its credentials
    revoked, so a certificate sent now would only be kept by a device that must forget it."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT c.device_id, d.client_id, d.principal_code, c.serial, c.not_after, c.pem"
            " FROM certificates c JOIN devices d ON d.id = c.device_id"
            " WHERE c.revoked_at IS NULL AND c.replaced_by IS NULL"
            " AND d.state NOT IN ('retired', 'reconditioning')"
            " AND c.not_after > %s"
            " AND EXISTS (SELECT 1 FROM certificates p WHERE p.replaced_by = c.serial"
            "  AND p.revocation_reason IS DISTINCT FROM 'superseded')"
            " AND NOT EXISTS (SELECT 1 FROM device_history h WHERE h.device_id = c.device_id"
            "  AND h.action = %s AND h.detail->>'serial' = c.serial)"
            " ORDER BY c.not_after, c.serial",
            (now_or(None), DELIVERED),
        )
        rows = cur.fetchall()
    chains: dict[str, str] = {}
    deliveries = []
    for row in rows:
        chain = chains.get(row["principal_code"]) or chain_pem(conn, row["principal_code"])
        chains[row["principal_code"]] = chain
        deliveries.append(Delivery(row["device_id"], row["client_id"], row["serial"],
                                   row["not_after"], row["pem"], chain))
    return deliveries


def deliver(conn: Conn, publish: Publish, *, actor: str) -> list[dict[str, Any]]:
    """Publish every pending certificate; record in the device's history what the broker
    accepted (the rest is tried again next time)."""
    results = []
    for delivery in pending_deliveries(conn):
        published = publish(delivery.topic, delivery.payload())
        if published:
            conn.execute(
                "INSERT INTO device_history (device_id, action, actor, detail)"
                " VALUES (%s, %s, %s, %s)",
                (delivery.device_id, DELIVERED, actor,
                 Jsonb({"serial": delivery.serial, "topic": delivery.topic})),
            )
            conn.commit()
        results.append({"device_id": delivery.device_id, "serial": delivery.serial,
                        "topic": delivery.topic, "published": published})
    return results


def run_round(conn: Conn, passphrase: bytes, publish: Publish, *, actor: str = "renewal",
              now: datetime | None = None) -> dict[str, Any]:
    """One round: renew what is due, then hand every pending certificate to its device."""
    renewed, refused = renew_due(conn, passphrase, actor=actor, now=now)
    return {"renewed": renewed, "refused": refused,
            "delivered": deliver(conn, publish, actor=actor)}
