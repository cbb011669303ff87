"""What the provisioning routes share: who may act for which principal, the CA passphrase,
the mapping of provisioning errors to HTTP statuses, and JSON/CSV responses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request, Response

from adapters.model import dumps
from gateway.api.deps import CallerDep, Conn, allowed
from gateway.auth import Caller, Role, Scope
from provisioning import reports, service
from provisioning.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ProvisioningError,
)
from provisioning.pki import PassphraseError
from provisioning.policy import PolicyError

_OPERATORS = (Role.TECHNICIAN, Role.ADMIN)


@dataclass(frozen=True, slots=True)
class Operator:
    """A technician or admin; ``scope`` is the one principal it may touch (None: any)."""

    caller: Caller

    @property
    def scope(self) -> str | None:
        """The principal a technician is confined to; None for an admin."""
        return None if self.caller.role is Role.ADMIN else self.caller.principal

    @property
    def actor(self) -> str:
        """Who acted, for device histories (the CLI writes ``cli:<user>``)."""
        return f"api:{self.caller.subject}"

    def principal_for(self, named: str | None) -> str:
        """The principal a write acts for: the caller's own unless an admin names another."""
        if named is None or named == self.caller.principal:
            return self.caller.principal
        if self.scope is not None:
            # Refused for what the caller is, whether or not the principal exists.
            raise HTTPException(403, f"a technician of principal {self.caller.principal}"
                                     f" may not act for principal {named}")
        return named


def operator(who: CallerDep) -> Operator:
    """The one place that decides whether the caller may provision, and for whom."""
    return Operator(allowed(who, _OPERATORS, Scope.PROVISIONING, "provision devices"))


OperatorDep = Annotated[Operator, Depends(operator)]


def admin(op: OperatorDep) -> Operator:
    """An operator that is an admin; 403 otherwise."""
    if op.caller.role is not Role.ADMIN:
        raise HTTPException(403, f"only an admin may do this, not a {op.caller.role}")
    return op


AdminDep = Annotated[Operator, Depends(admin)]


def named_principal(op: OperatorDep,
                    principal: Annotated[str | None, Query(max_length=32)] = None) -> str | None:
    """``?principal=``: an admin's choice (None: every principal); a technician's own."""
    if principal is None:
        return op.scope
    return op.principal_for(principal)


PrincipalQuery = Annotated[str | None, Depends(named_principal)]


def passphrase(request: Request) -> bytes | None:
    """The CA passphrase the application was built with, if any."""
    value = getattr(request.app.state, "aidlink_ca_passphrase", None)
    return value if isinstance(value, bytes) else None


MaybePassphrase = Annotated[bytes | None, Depends(passphrase)]


def need_ca(value: bytes | None) -> bytes:
    """The passphrase, or 503: without it no certificate can be issued or revoked."""
    if value is None:
        raise HTTPException(503, "certificate authority not configured")
    return value


def required_passphrase(value: MaybePassphrase) -> bytes:
    """The CA passphrase as a dependency, 503 when it is not configured."""
    return need_ca(value)


Passphrase = Annotated[bytes, Depends(required_passphrase)]


@contextmanager
def mapped_errors() -> Iterator[None]:
    """Provisioning errors as HTTP statuses; every message names the object or field."""
    try:
        yield
    except NotFoundError as exc:
        raise HTTPException(404, str(exc)) from exc
    except ConflictError as exc:
        raise HTTPException(409, str(exc)) from exc
    except (InvalidInputError, PolicyError) as exc:
        # 422 like request validation, so a client treats every refusal of its input alike.
        raise HTTPException(422, str(exc)) from exc
    except PassphraseError as exc:
        raise HTTPException(503, str(exc)) from exc
    except ProvisioningError as exc:
        raise HTTPException(400, str(exc)) from exc


def scoped_device(conn: Conn, op: Operator, device_id: str) -> dict[str, Any]:
    """A device the operator may touch; another principal's is as unknown as a missing one."""
    try:
        return service.get_device(conn, device_id, op.scope)
    except NotFoundError:
        raise HTTPException(404, f"device {device_id} not found") from None


def json_response(body: Any, status_code: int = 200) -> Response:
    """JSON through the project's serialiser, which keeps Decimals exact."""
    return Response(dumps(body), status_code=status_code, media_type="application/json")


def report_response(name: str, rows: list[dict[str, Any]], fmt: str) -> Response:
    """A report as JSON items or, with ``format=csv``, as CSV text."""
    if fmt == "csv":
        return Response(reports.to_csv(name, rows), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    return json_response({"report": name, "items": rows})
