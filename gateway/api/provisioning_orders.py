"""Orders, lead times and swaps over HTTP (``/v1/orders``, ``/v1/orders/import``,
``/v1/reports/lead-times``, ``/v1/devices/{id}/swap``) for technicians and admins, over the
same service layer as the CLI.

A technician works within its token's principal: order rows of another principal are refused
by line, its report is its own, and another principal's device is "not found".
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import Conn, State
from gateway.api.provisioning_common import (
    OperatorDep,
    PrincipalQuery,
    json_response,
    mapped_errors,
    scoped_device,
)
from gateway.api.provisioning_licences import CsvBody
from provisioning import lead_times, orders, swap

router = APIRouter(prefix="/v1", tags=["provisioning"])

Format = Annotated[Literal["json", "csv"], Query(alias="format")]
Month = Annotated[str | None, Query(pattern=r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])$")]


class SwapBody(BaseModel):
    """The device from stock that replaces this one, and what is wrong with this one."""

    model_config = ConfigDict(extra="forbid")

    new_device: str = Field(min_length=1, max_length=64)
    fault: str = Field(min_length=1, max_length=500)
    reason: str | None = Field(default=None, min_length=1, max_length=500)


@router.post("/orders/import")
def import_orders(op: OperatorDep, conn: Conn, state: State, text: CsvBody) -> Response:
    """Import portal orders from CSV; bad rows are refused with their line and reason."""
    with mapped_errors():
        result = orders.import_csv(conn, state.secret, text, actor=op.actor,
                                   only_principal=op.scope)
    return json_response(result)


@router.get("/orders")
def list_orders(_op: OperatorDep, conn: Conn, principal: PrincipalQuery,
                state: Annotated[Literal["all", "open", "delivered"], Query()] = "all",
                limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> Response:
    """Orders oldest first, with the delivering device and lead time (no patient shown)."""
    with mapped_errors(), conn.transaction():
        rows = lead_times.list_orders(conn, principal=principal, state=state, limit=limit)
    return json_response({"items": rows})


@router.get("/reports/lead-times")
def lead_time_report(_op: OperatorDep, conn: Conn, principal: PrincipalQuery,
                     month: Month = None, fmt: Format = "json") -> Response:
    """Lead times in working days from order to delivery, per principal and month."""
    with mapped_errors(), conn.transaction():
        first = None if month is None else lead_times.parse_month(month)
        rows = lead_times.lead_times(conn, principal=principal, month=first)
    if fmt == "csv":
        return Response(lead_times.to_csv(rows), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="lead-times.csv"'})
    return json_response({"report": "lead-times", "items": rows})


@router.post("/devices/{device_id}/swap")
def swap_device(device_id: str, body: SwapBody, op: OperatorDep, conn: Conn) -> Response:
    """Replace this assigned device by one in stock: same patient, basis and unit from now."""
    with mapped_errors(), conn.transaction():
        scoped_device(conn, op, device_id)
        scoped_device(conn, op, body.new_device)
        result = swap.swap(conn, old_id=device_id, new_id=body.new_device, fault=body.fault,
                           actor=op.actor, reason=body.reason)
    return json_response(result)
