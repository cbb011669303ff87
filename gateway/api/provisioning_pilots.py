"""Model pilots (``/v1/models``), principals joining (``/v1/principals/{code}/join``) and
their reports (``/v1/reports/participation``, ``/v1/reports/pilot``) for technicians and
admins, over the same service layer as the command line.

Stages are the devices centre's, so only admins change them; the reports show a technician
its own principal only.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import Conn
from gateway.api.provisioning_common import (
    AdminDep,
    MaybePassphrase,
    OperatorDep,
    PrincipalQuery,
    json_response,
    mapped_errors,
)
from provisioning import participation, pilot_report, pilots

router = APIRouter(prefix="/v1", tags=["provisioning"])

Format = Annotated[Literal["json", "csv"], Query(alias="format")]
ModelName = Annotated[str, Path(min_length=1, max_length=64)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PilotBody(_In):
    """Who may take part in a model's pilot, and how many devices it may have in service."""

    principals: list[str] = Field(default_factory=list, max_length=100)
    units: list[str] = Field(default_factory=list, max_length=100)
    max_devices: int | None = Field(default=None, ge=1)
    reason: str | None = Field(default=None, min_length=1, max_length=500)


class PromoteBody(_In):
    """Why a piloted model is ready for general use."""

    reason: str = Field(min_length=1, max_length=500)


class JoinBody(_In):
    """The day a principal starts taking part (default: now)."""

    participates_from: date | None = Field(default=None, alias="from")


def _report(name: str, columns: tuple[str, ...], rows: list[dict[str, Any]],
            fmt: str) -> Response:
    """A report as JSON items or CSV text, as gateway.api.provisioning_common answers them."""
    if fmt == "csv":
        return Response(participation.csv_of(columns, rows),
                        media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    return json_response({"report": name, "items": rows})


@router.get("/models")
def list_models(op: OperatorDep, conn: Conn) -> Response:
    """Models with a stage (any other model is in general use)."""
    with mapped_errors(), conn.transaction():
        return json_response({"items": pilots.list_stages(conn, op.scope)})


@router.get("/models/{model}")
def get_model(model: ModelName, op: OperatorDep, conn: Conn) -> Response:
    """A model's stage, devices in service and stage history."""
    with mapped_errors(), conn.transaction():
        return json_response(pilots.describe(conn, model, op.scope))


@router.put("/models/{model}/pilot")
def pilot_model(model: ModelName, body: PilotBody, op: AdminDep, conn: Conn) -> Response:
    """Put a model in a pilot, or change its pilot (admins only: it spans principals)."""
    with mapped_errors(), conn.transaction():
        return json_response(pilots.set_pilot(
            conn, model, principals=body.principals, units=body.units,
            max_devices=body.max_devices, actor=op.actor, reason=body.reason))


@router.post("/models/{model}/promote")
def promote_model(model: ModelName, body: PromoteBody, op: AdminDep, conn: Conn) -> Response:
    """Promote a piloted model to general use, recording who and why."""
    with mapped_errors(), conn.transaction():
        return json_response(pilots.promote(conn, model, actor=op.actor, reason=body.reason))


@router.post("/principals/{code}/join")
def join_principal(code: Annotated[str, Path(min_length=1, max_length=32)], body: JoinBody,
                   op: AdminDep, conn: Conn, ca: MaybePassphrase) -> Response:
    """Make a principal registered as not participating take part: its policy and CA."""
    with mapped_errors(), conn.transaction():
        return json_response(participation.join(conn, ca, code, actor=op.actor,
                                                start=body.participates_from))


@router.get("/reports/participation")
def participation_report(conn: Conn, principal: PrincipalQuery,
                         fmt: Format = "json") -> Response:
    """Who participates since when, and who does not yet."""
    with mapped_errors(), conn.transaction():
        rows = participation.report(conn, principal=principal)
    return _report("participation", participation.COLUMNS, rows, fmt)


@router.get("/reports/pilot")
def pilot(conn: Conn, principal: PrincipalQuery,
          model: Annotated[str, Query(min_length=1, max_length=64)],
          since: date | None = None, until: date | None = None,
          fmt: Format = "json") -> Response:
    """A model's devices and the evidence for promoting it (``until`` excluded)."""
    with mapped_errors(), conn.transaction():
        rows = pilot_report.pilot_report(
            conn, model, principal=principal,
            since=None if since is None else participation.start_of(since),
            until=None if until is None else participation.start_of(until))
    return _report("pilot", pilot_report.COLUMNS, rows, fmt)
