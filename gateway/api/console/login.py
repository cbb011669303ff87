"""Logging in and out: an OAuth client's id and secret in, the token cookie out.

The token comes from ``gateway.api.oauth.token`` itself, the function behind
``POST /oauth/token``, so the console grants exactly what the API would: the same secret
check, scopes, policy refusals, rate limit and signing key.
"""

from __future__ import annotations

import hmac
import json
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse

from gateway.api import deps, oauth
from gateway.api.console import i18n, session
from gateway.api.console.render import ConsoleRoute, language, page, redirect
from gateway.api.console.session import CsrfCaller
from gateway.api.deps import Conn, State
from gateway.auth import Role

router = APIRouter(route_class=ConsoleRoute)

CONSOLE_ROLES = (Role.TECHNICIAN, Role.ADMIN)
MESSAGES = ("login.expired", "login.required", "login.out")


def _login_page(request: Request, state: State, *, status: int = 200, problem: str = "",
                errors: dict[str, str] | None = None, client_id: str = "",
                message: str = "") -> HTMLResponse:
    """The login form, with a fresh nonce for its CSRF token."""
    nonce = session.new_login_nonce()
    response = page(request, "login.html", status=status, problem=problem,
                    errors=errors or {}, values={"client_id": client_id}, message=message,
                    csrf=session.login_csrf_token(state.secret, nonce))
    session.set_cookie(request, response, session.LOGIN_COOKIE, nonce)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, state: State, message: str | None = None) -> HTMLResponse:
    """The login form; ``message`` says why the console sent the user here."""
    t = i18n.Translator(language(request))
    return _login_page(request, state, message=t(message) if message in MESSAGES else "")


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, state: State, conn: Conn,
          client_id: Annotated[str, Form(max_length=200)] = "",
          client_secret: Annotated[str, Form(max_length=500)] = "",
          csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    """Exchange the client's credentials for a token, kept in the console cookie."""
    t = i18n.Translator(language(request))
    nonce = request.cookies.get(session.LOGIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(csrf, session.login_csrf_token(state.secret,
                                                                           nonce)):
        return _login_page(request, state, status=403, problem=t("csrf"), client_id=client_id)
    errors = {name: t("required") for name, value in
              (("client_id", client_id), ("client_secret", client_secret)) if not value.strip()}
    if errors:
        return _login_page(request, state, status=422, errors=errors, client_id=client_id)
    answer = oauth.token({"grant_type": oauth.GRANT_TYPE, "client_id": client_id.strip(),
                          "client_secret": client_secret}, state, conn, None)
    granted = json.loads(bytes(answer.body))
    if answer.status_code != 200:
        return _login_page(request, state, status=answer.status_code, client_id=client_id,
                           problem=t("login.refused", reason=granted["error_description"]))
    token = str(granted["access_token"])
    who = deps.authenticate(state, f"Bearer {token}")
    if who.role not in CONSOLE_ROLES:
        return _login_page(request, state, status=403, client_id=client_id,
                           problem=t("login.role", role=who.role))
    response = redirect(f"{session.PATH}/")
    session.set_cookie(request, response, session.COOKIE, token,
                       max_age=int(granted["expires_in"]))
    session.clear_cookie(request, response, session.LOGIN_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, who: CsrfCaller) -> Response:
    """End the console session: the token cookie goes."""
    del who  # only a signed-in user with this session's CSRF token may log it out
    response = redirect(f"{session.PATH}/login?message=login.out")
    session.clear_cookie(request, response, session.COOKIE)
    return response
