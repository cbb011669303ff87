"""Device provisioning over HTTP (``/v1/devices``, ``/v1/policy``, ``/v1/reports``) for
technicians and admins, over the same service layer as the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from gateway.api.broker_sync import BrokerDir, sync
from gateway.api.deps import Conn, State
from gateway.api.provisioning_admin import router as admin_router
from gateway.api.provisioning_common import (
    AdminDep,
    MaybePassphrase,
    OperatorDep,
    Passphrase,
    json_response,
    mapped_errors,
    need_ca,
    scoped_device,
)
from gateway.api.provisioning_licences import DeviceBroker, device_broker
from gateway.api.provisioning_licences import router as licences_router
from gateway.api.provisioning_models import (
    AssignBody,
    ConfirmBody,
    DeviceCreate,
    DevicePublic,
    Onboarded,
    PairBody,
    ReasonBody,
    ReturnBody,
    RevokeBody,
    TransferBody,
    WipePublic,
)
from gateway.api.provisioning_policy import router as policy_router
from provisioning import lifecycle, onboarding, pki, service

router = APIRouter(prefix="/v1", tags=["provisioning"])
router.include_router(policy_router)
router.include_router(licences_router)
router.include_router(admin_router)

# Which RFC 5280 reason a lifecycle transition revokes credentials under (as the CLI does);
# reconditioning revokes under lifecycle.RECONDITION_REVOCATION when the wipe is confirmed.
_RETIRE, _TRANSFER = "cessation_of_operation", "affiliation_changed"


@router.post("/devices", status_code=201, response_model=Onboarded,
             response_model_exclude_none=True)
def create_device(body: DeviceCreate, op: OperatorDep, conn: Conn,
                  ca: MaybePassphrase, broker: BrokerDir,
                  broker_url: DeviceBroker = None) -> dict[str, Any]:
    """Onboard a device with a certificate or a password, as its principal's policy says;
    the answer is its provisioning bundle, as ``aidlink device onboard`` prints it."""
    if broker_url is None:
        # Called as a function (the console's form) rather than as the route.
        broker_url = device_broker()
    principal = op.principal_for(body.principal)
    with mapped_errors(), conn.transaction():
        # Only certificates need the CA: a password principal onboards without it.
        if ca is None and service.get_principal(conn, principal)["device_auth"] != "password":
            need_ca(ca)
        row = onboarding.onboard(
            conn, ca or b"", principal=principal, model=body.model, serial=body.serial,
            actor=op.actor, csr_pem=body.csr_pem, alarm_account=body.alarm_account,
            firmware_version=body.firmware, unit=body.unit, broker_url=broker_url,
            reason=body.reason)
    # A password device can connect only once the broker's password file holds it; a
    # certificate needs nothing there (the CA chain admits it).
    if "mqtt_password" in row and ca is not None:
        sync(conn, ca, broker, {})
    return row


@router.get("/devices/{device_id}", response_model=DevicePublic)
def get_device(device_id: str, op: OperatorDep, conn: Conn) -> DevicePublic:
    """One device the caller may see."""
    with mapped_errors(), conn.transaction():
        row = scoped_device(conn, op, device_id)
    return DevicePublic(id=row["id"], principal=row["principal_code"],
                        client_id=row["client_id"], model=row["model"], serial=row["serial"],
                        state=row["state"], created_at=row["created_at"])


@router.get("/devices/{device_id}/history")
def device_history(device_id: str, op: OperatorDep, conn: Conn,
                   by_owner: Annotated[bool, Query()] = False) -> Response:
    """A device's life, oldest first; ``by_owner`` splits it by the principal owning it."""
    with mapped_errors(), conn.transaction():
        scoped_device(conn, op, device_id)
        parts = lifecycle.history_by_owner(conn, device_id)
        rows = service.history(conn, device_id) if op.scope is None else []
    if op.scope is not None:
        # A technician sees its own principal's part of a transferred device's life only.
        parts = {op.scope: parts.get(op.scope, [])}
        rows = parts[op.scope]
    return json_response(parts if by_owner else rows)


@router.post("/devices/{device_id}/pair")
def pair(device_id: str, body: PairBody, op: OperatorDep, conn: Conn) -> Response:
    """Pair the device with a hub of the same principal."""
    with mapped_errors(), conn.transaction():
        scoped_device(conn, op, device_id)
        # The hub is checked too, so a technician cannot probe another principal's hubs.
        scoped_device(conn, op, body.hub)
        result = service.pair(conn, peripheral_id=device_id, hub_id=body.hub, actor=op.actor,
                              reason=body.reason)
    return json_response(result)


@router.post("/devices/{device_id}/assign")
def assign(device_id: str, body: AssignBody, op: OperatorDep, conn: Conn,
           state: State) -> Response:
    """Assign a device in stock to a patient under HSL or SoL."""
    with mapped_errors(), conn.transaction():
        scoped_device(conn, op, device_id)
        result = service.assign(conn, state.secret, device_id=device_id, patient=body.patient,
                                basis=body.basis, actor=op.actor,
                                prescribing_unit=body.prescribing_unit, order=body.order,
                                until=body.until, reason=body.reason)
    return json_response(result)


@router.post("/devices/{device_id}/return")
def return_device(device_id: str, body: ReturnBody, op: OperatorDep, conn: Conn) -> Response:
    """Take an assigned device back; its assignment ends now."""
    with mapped_errors(), conn.transaction():
        scoped_device(conn, op, device_id)
        result = lifecycle.return_device(conn, device_id=device_id, actor=op.actor,
                                         reason=body.reason, fault=body.fault)
    return json_response(result)


@router.post("/devices/{device_id}/recondition", response_model=WipePublic)
def recondition(device_id: str, body: ReasonBody, op: OperatorDep, conn: Conn,
                ca: MaybePassphrase, broker: BrokerDir) -> WipePublic:
    """Start reconditioning: unpair, and request a wipe; the command is kept pending until
    the gateway's downlink round publishes it retained on the device's down topic.

    No credential changes here (the device needs them to receive the wipe and confirm it),
    so neither the CA nor the broker configuration is used; the console calls this route
    function with both all the same.
    """
    with mapped_errors(), conn.transaction():
        scoped_device(conn, op, device_id)
        wipe = lifecycle.start_reconditioning(conn, device_id=device_id, actor=op.actor,
                                              reason=body.reason)
    return WipePublic(device_id=wipe.device_id, nonce=wipe.nonce, topic=wipe.topic,
                      payload=wipe.payload)


@router.post("/devices/{device_id}/recondition/confirm")
def confirm_wipe(device_id: str, body: ConfirmBody, op: OperatorDep, conn: Conn,
                 ca: MaybePassphrase, broker: BrokerDir) -> Response:
    """Record the confirmation of the device's latest wipe request (a device wiped by hand),
    which revokes its credentials; with a CA, the broker shuts the device out at once."""
    with mapped_errors(), conn.transaction():
        scoped_device(conn, op, device_id)
        result = lifecycle.confirm_wipe(conn, device_id=device_id, nonce=body.nonce,
                                        confirmed_at=body.confirmed_at, actor=op.actor,
                                        reason="the wipe was confirmed by hand")
    return json_response(_synced(conn, ca, broker, result))


@router.post("/devices/{device_id}/recondition/finish")
def finish_reconditioning(device_id: str, op: OperatorDep, conn: Conn,
                          ca: MaybePassphrase, broker: BrokerDir) -> Response:
    """Put a wiped device back in stock without credentials (it needs new ones before reuse)."""
    with mapped_errors(), conn.transaction():
        scoped_device(conn, op, device_id)
        result = lifecycle.finish_reconditioning(conn, device_id=device_id, actor=op.actor)
    return json_response(_synced(conn, ca, broker, result))


def _synced(conn: Any, ca: bytes | None, broker: Path | None,
            result: dict[str, Any]) -> dict[str, Any]:
    # Without a CA passphrase the CRLs cannot be signed: the next broker sync applies it.
    return result if ca is None else sync(conn, ca, broker, result)


@router.post("/devices/{device_id}/reissue")
def reissue(device_id: str, op: OperatorDep, conn: Conn, ca: Passphrase,
            broker: BrokerDir) -> Response:
    """New credentials (a certificate from a server-generated key) before reuse."""
    with mapped_errors(), conn.transaction():
        scoped_device(conn, op, device_id)
        result = onboarding.reissue(conn, ca, device_id=device_id, actor=op.actor)
    return json_response(sync(conn, ca, broker, result))


@router.post("/devices/{device_id}/retire")
def retire(device_id: str, body: ReasonBody, op: OperatorDep, conn: Conn,
           ca: Passphrase, broker: BrokerDir) -> Response:
    """Take a device out of service for good."""
    with mapped_errors(), conn.transaction():
        scoped_device(conn, op, device_id)
        result = lifecycle.retire(
            conn, device_id=device_id, actor=op.actor, reason=body.reason,
            revoke_credentials=onboarding.revoke_hook(conn, ca, op.actor, _RETIRE))
    return json_response(sync(conn, ca, broker, result))


@router.post("/devices/{device_id}/transfer")
def transfer(device_id: str, body: TransferBody, op: AdminDep, conn: Conn,
             ca: Passphrase, broker: BrokerDir) -> Response:
    """Give a device in stock to another principal (admins only: it spans two)."""
    with mapped_errors(), conn.transaction():
        scoped_device(conn, op, device_id)
        result = lifecycle.transfer(
            conn, device_id=device_id, to_principal=body.to_principal, actor=op.actor,
            reason=body.reason,
            revoke_credentials=onboarding.revoke_hook(conn, ca, op.actor, _TRANSFER))
    return json_response(sync(conn, ca, broker, result))


@router.post("/devices/{device_id}/revoke")
def revoke(device_id: str, body: RevokeBody, op: OperatorDep, conn: Conn,
           ca: Passphrase, broker: BrokerDir) -> Response:
    """Revoke a device's certificates and password (the next CRL lists them)."""
    with mapped_errors(), conn.transaction():
        scoped_device(conn, op, device_id)
        result = pki.revoke(conn, ca, device_id, body.reason, op.actor)
    return json_response(sync(conn, ca, broker, result))
