"""Certificate renewal (``/devices/{id}/renew``, ``/devices/renew-due``), principals' CRLs
(``/principals/{code}/crl``) and API clients (``/clients``), included under ``/v1`` by
``gateway.api.provisioning``: the routes of ``aidlink device renew``, ``aidlink principal
crl`` and ``aidlink client …``, over the same service functions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import Conn
from gateway.api.provisioning_common import (
    AdminDep,
    MaybePassphrase,
    OperatorDep,
    Passphrase,
    json_response,
    mapped_errors,
    scoped_device,
)
from gateway.auth import ROLE_SCOPES, Role
from provisioning import api_clients, pki, renewal, service

router = APIRouter()

# Text the database stores as given: control characters (NUL above all) are refused up front,
# so they get a 422 naming the field rather than a failing INSERT.
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RenewBody(_In):
    """How to renew: the device's CSR, a new server-generated key, or (neither) its current
    key, so the new certificate can reach the device with nothing secret in it."""

    csr_pem: str | None = Field(default=None, min_length=1, max_length=20000)
    new_key: bool = False


class ClientCreate(_In):
    """An API client of the caller's principal; scopes default to every scope of the role."""

    role: Role
    name: str = Field(min_length=1, max_length=200, pattern=_PRINTABLE)
    scopes: list[str] | None = Field(default=None, max_length=16)
    client_id: str | None = Field(default=None, min_length=1, max_length=64)


def _issued(device_id: str, issued: pki.Issued) -> dict[str, Any]:
    """A renewed certificate under the names ``aidlink device renew`` prints."""
    row: dict[str, Any] = {"device_id": device_id, "certificate_serial": issued.serial,
                           "certificate_not_after": issued.not_after,
                           "certificate_pem": issued.certificate_pem,
                           "ca_chain_pem": issued.chain_pem}
    if issued.private_key_pem is not None:
        row["private_key_pem"] = issued.private_key_pem
    return row


@router.post("/devices/renew-due")
def renew_due(op: OperatorDep, conn: Conn, ca: Passphrase,
              principal: Annotated[str | None, Query(min_length=1, max_length=32,
                                                     pattern=_PRINTABLE)] = None,
              ) -> Response:
    """Renew every certificate of the caller's principal inside its renewal window, keeping
    each device's key; a refused one is listed with the rule that refused it (a model or
    firmware rule of the policy included), and the rest go on."""
    code = op.principal_for(principal)
    with mapped_errors():
        service.get_principal(conn, code)
        # Committed first: each renewal commits on its own (as on the schedule) and a refused
        # one rolls back, which must undo that renewal only.
        conn.commit()
        renewed, refused = renewal.renew_due(conn, ca, actor=op.actor, principal=code)
    # Without the certificates' PEM, as before: this answer lists what happened.
    shown = [{key: row[key] for key in ("device_id", "replaces", "serial", "not_after")}
             for row in renewed]
    return json_response({"principal": code, "renewed": shown, "refused": refused})


@router.post("/devices/{device_id}/renew")
def renew(device_id: str, op: OperatorDep, conn: Conn, ca: Passphrase,
          body: RenewBody | None = None) -> Response:
    """A successor to the device's current certificate (under the current policy), which
    stays valid until it expires."""
    chosen = body or RenewBody()
    if chosen.csr_pem is not None and chosen.new_key:
        raise HTTPException(422, "body: give csr_pem or new_key, not both")
    with mapped_errors(), conn.transaction():
        scoped_device(conn, op, device_id)
        issued = pki.renew(conn, ca, device_id=device_id, actor=op.actor,
                           csr_pem=chosen.csr_pem,
                           keep_key=chosen.csr_pem is None and not chosen.new_key)
    return json_response(_issued(device_id, issued))


# RFC 2585 registers application/pkix-crl for a DER CRL; PEM has no registered type, and
# application/x-pem-file is what tools (curl, browsers) save as a .pem file.
CRL_MEDIA_TYPES = {"der": "application/pkix-crl", "pem": "application/x-pem-file"}
CRL_ENCODINGS = {"der": serialization.Encoding.DER, "pem": serialization.Encoding.PEM}


@router.get("/principals/{code}/crl", response_class=Response, responses={200: {
    "description": "The principal's CRL, DER unless ``format=pem``.",
    "content": {media: {} for media in CRL_MEDIA_TYPES.values()}}})
def principal_crl(code: Annotated[str, Path(min_length=1, max_length=32, pattern=_PRINTABLE)],
                  op: OperatorDep, conn: Conn, ca: MaybePassphrase,
                  fmt: Annotated[Literal["der", "pem"], Query(alias="format")] = "der",
                  ) -> Response:
    """The CRL of the principal's intermediate CA: the one signed last while it is well
    inside its validity and lists every revocation, else a fresh one (which needs the CA
    passphrase: 503 without it)."""
    if op.scope is not None and op.scope != code:
        # Another principal's CRL is as unknown as a missing principal's.
        raise HTTPException(404, f"principal {code} does not exist")
    with mapped_errors(), conn.transaction():
        crl = pki.current_crl(conn, ca, code)
    return Response(crl.public_bytes(CRL_ENCODINGS[fmt]), media_type=CRL_MEDIA_TYPES[fmt])


def _own_client(conn: Conn, principal: str, client_id: str) -> None:
    """404 unless the client is the principal's: another principal's is as unknown as none."""
    if not any(row["client_id"] == client_id
               for row in api_clients.list_clients(conn, principal)):
        raise HTTPException(404, f"client {client_id} not found")


@router.post("/clients", status_code=201)
def add_client(body: ClientCreate, op: AdminDep, conn: Conn) -> Response:
    """Register an API client of the caller's principal; its ``client_secret`` is in this
    answer only (the server keeps a hash)."""
    scopes = body.scopes if body.scopes is not None else sorted(ROLE_SCOPES[body.role])
    with mapped_errors(), conn.transaction():
        row, secret = api_clients.add_client(
            conn, principal=op.caller.principal, role=body.role, name=body.name,
            actor=op.actor, scopes=scopes, client_id=body.client_id)
    return json_response({**row, "client_secret": secret}, 201)


@router.get("/clients")
def list_clients(op: AdminDep, conn: Conn) -> Response:
    """The caller's principal's API clients (never their secrets)."""
    with mapped_errors(), conn.transaction():
        rows = api_clients.list_clients(conn, op.caller.principal)
    return json_response({"items": rows})


@router.post("/clients/{client_id}/disable")
def disable_client(client_id: str, op: AdminDep, conn: Conn) -> Response:
    """Disable a client of the caller's principal: no more tokens; those it has run out."""
    with mapped_errors(), conn.transaction():
        _own_client(conn, op.caller.principal, client_id)
        row = api_clients.disable_client(conn, client_id)
    return json_response(row)
