"""The onboarding form: one device for the caller's principal, through the API's
``POST /v1/devices`` route function; its credentials are shown once on the answer page."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from gateway.api import provisioning
from gateway.api.broker_sync import BrokerDir
from gateway.api.console import i18n
from gateway.api.console.render import ConsoleRoute, language, page
from gateway.api.console.session import ConsoleCaller, CsrfCaller
from gateway.api.deps import Conn
from gateway.api.provisioning_common import MaybePassphrase, operator
from gateway.api.provisioning_models import DeviceCreate

router = APIRouter(route_class=ConsoleRoute)

Field = Annotated[str, Form(max_length=200)]
FIELDS = ("model", "serial", "firmware", "alarm_account", "unit")


@router.get("/onboard", response_class=HTMLResponse)
def onboard_form(request: Request, who: ConsoleCaller) -> HTMLResponse:
    """The empty form."""
    operator(who)
    return page(request, "onboard.html", who=who)


@router.post("/onboard", response_class=HTMLResponse)
def onboard(request: Request, who: CsrfCaller, conn: Conn, ca: MaybePassphrase,
            broker: BrokerDir, model: Field = "", serial: Field = "", firmware: Field = "",
            alarm_account: Field = "", unit: Field = "") -> HTMLResponse:
    """Onboard one device of the caller's principal; its credentials, this once."""
    op = operator(who)
    t = i18n.Translator(language(request))
    values = {"model": model, "serial": serial, "firmware": firmware,
              "alarm_account": alarm_account, "unit": unit}
    given: dict[str, Any] = {k: v.strip() for k, v in values.items() if v.strip()}
    try:
        # The console's principal is the token's, an admin's too (no principal field).
        body = DeviceCreate(principal=who.principal, **given)
    except ValidationError as exc:
        errors = {str(err["loc"][0]): t("required") if err["type"] == "missing"
                  else err["msg"] for err in exc.errors() if err["loc"]}
        return page(request, "onboard.html", who=who, status=422, errors=errors,
                    values=values)
    try:
        made = provisioning.create_device(body, op, conn, ca, broker)
    except HTTPException as exc:
        if exc.status_code not in (409, 422):
            raise
        return page(request, "onboard.html", who=who, status=exc.status_code,
                    problem=str(exc.detail), values=values)
    return page(request, "onboarded.html", who=who, made=made)
