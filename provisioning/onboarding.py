"""Onboarding with credentials: the device record plus a certificate or a password, as the
principal's policy says, in one transaction. The CLI and the API both use this."""

from __future__ import annotations

from typing import Any

from gateway import profiles
from gateway.settings import without_userinfo
from provisioning import lifecycle, pki, service
from provisioning.errors import InvalidInputError
from provisioning.service import Conn


def onboard(conn: Conn, passphrase: bytes, *, principal: str, model: str, serial: str,
            actor: str, csr_pem: str | None = None, alarm_account: str | None = None,
            firmware_version: str | None = None, unit: str | None = None,
            broker_url: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """Register a device and give it credentials; the caller commits (``reason``, when
    given, is kept in the device's history).

    The result is the device's provisioning bundle: ``mqtt_url`` (``broker_url``, the address
    devices connect to, when known), ``topic_prefix``, the model's ``profile`` settings and the
    credentials below.

    Under a policy that requires mutual TLS the device gets a certificate (CN = its client id)
    from its own CSR, or from a key generated here and returned only this once; under one that
    allows passwords, a password (only its hash is kept).
    """
    row = service.onboard_device(conn, principal=principal, model=model, serial=serial,
                                 actor=actor, alarm_account=alarm_account,
                                 firmware_version=firmware_version, unit=unit,
                                 reason=reason)
    row.update(_bundle_settings(row["client_id"], model, broker_url))
    if "mqtt_password" in row:
        if csr_pem is not None:
            raise InvalidInputError(
                f"principal {principal}'s policy gives devices passwords; a CSR is not used")
        return row
    issued = pki.issue(conn, passphrase, device_id=row["device_id"], principal=principal,
                       client_id=row["client_id"], csr_pem=csr_pem, actor=actor)
    row["certificate_pem"] = issued.certificate_pem
    row["ca_chain_pem"] = issued.chain_pem
    row["certificate_serial"] = issued.serial
    row["certificate_not_after"] = issued.not_after
    if issued.private_key_pem is not None:
        row["private_key_pem"] = issued.private_key_pem
    return row


def _bundle_settings(client_id: str, model: str, broker_url: str | None) -> dict[str, Any]:
    """What a device needs besides credentials: the broker, where to publish, and its
    profile's settings."""
    settings: dict[str, Any] = {"topic_prefix": f"aidlink/v1/{client_id}/"}
    if broker_url:
        # Stripped here too, whatever the caller passed: a bundle leaves the building, and
        # must never carry the user and password of some other client of the broker.
        settings["mqtt_url"] = without_userinfo(broker_url)
    profile = profiles.by_model().get(model)
    if profile is not None:
        settings["profile"] = {
            "model": profile.model, "channels": sorted(profile.channels),
            "zone": profile.zone, "clock": profile.clock,
            "reporting_interval_s": int(profile.reporting_interval.total_seconds()),
        }
    return settings


def reissue(conn: Conn, passphrase: bytes, *, device_id: str, actor: str,
            csr_pem: str | None = None) -> dict[str, Any]:
    """New credentials for a device back in stock (after reconditioning or a transfer)."""
    device = service.get_device(conn, device_id)
    issued = pki.issue(conn, passphrase, device_id=device_id,
                       principal=device["principal_code"], client_id=device["client_id"],
                       csr_pem=csr_pem, actor=actor)
    lifecycle.credentials_issued(conn, device_id=device_id, actor=actor,
                                 reason="new certificate issued")
    out: dict[str, Any] = {"device_id": device_id, "certificate_pem": issued.certificate_pem,
                           "ca_chain_pem": issued.chain_pem, "certificate_serial": issued.serial,
                           "certificate_not_after": issued.not_after}
    if issued.private_key_pem is not None:
        out["private_key_pem"] = issued.private_key_pem
    return out


def revoke_hook(conn: Conn, passphrase: bytes, actor: str,
                reason: str) -> lifecycle.RevokeHook:
    """The lifecycle's credential revocation, through the PKI (a password-only device has no
    certificate, which is fine)."""
    def revoke(device_id: str) -> None:
        pki.revoke(conn, passphrase, device_id, reason, actor, missing_ok=True)

    return revoke
