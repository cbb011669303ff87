"""Rendering console pages: the Jinja2 environment, the page context, and the route class
that turns refusals into HTML pages (or the login page) instead of the API's JSON."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import jinja2
from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute

from gateway.api.console import i18n, session
from gateway.auth import Caller

# Times show in the devices centre's zone, with the offset, so a reader never guesses.
ZONE = ZoneInfo("Europe/Stockholm")
# Pages hold patient data and one-time credentials: never cached, never framed, and no
# script or style from anywhere but here (the console serves none of either but its CSS).
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self';"
                                " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def local_time(moment: datetime | None) -> str:
    """A time as the devices centre reads it, e.g. ``2026-11-02 14:05 +01:00``."""
    if moment is None:
        return ""
    local = moment.astimezone(ZONE)
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M} {offset[:3]}:{offset[3:]}"


@cache
def environment() -> jinja2.Environment:
    """The templates, autoescaped (every value is untrusted until shown escaped)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway.api.console", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True)
    env.filters["local_time"] = local_time
    return env


def language(request: Request) -> str:
    """The language this request's page is in."""
    return i18n.choose(request.query_params.get("lang"), request.cookies,
                       request.headers.get("accept-language"))


def _switch_url(request: Request, lang: str, here: str | None) -> str:
    if here is not None:
        return f"{here}?{urlencode([('lang', lang)])}"
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    return f"{request.url.path}?{urlencode([*params, ('lang', lang)])}"


def page(request: Request, template: str, *, who: Caller | None = None, status: int = 200,
         here: str | None = None, **context: Any) -> HTMLResponse:
    """A page in the request's language, with the session's CSRF token when signed in;
    ``here`` is the page to switch language on when the request was a POST to elsewhere."""
    lang = language(request)
    token = session.session_token(request)
    state = request.app.state.aidlink
    values: dict[str, Any] = {
        "t": i18n.Translator(lang), "lang": lang, "who": who, "path": request.url.path,
        "csrf": session.csrf_token(state.secret, token) if who and token else "",
        "switch": {code: _switch_url(request, code, here) for code in i18n.LANGUAGES},
        "errors": {}, "values": {}, "message": "", "problem": "",
    }
    values.update(context)
    body = environment().get_template(template).render(values)
    response = HTMLResponse(body, status_code=status, headers=HEADERS)
    chosen = request.query_params.get("lang")
    if chosen in i18n.LANGUAGES and chosen != request.cookies.get(i18n.COOKIE):
        session.set_cookie(request, response, i18n.COOKIE, str(chosen), max_age=365 * 86400)
    return response


def redirect(url: str) -> RedirectResponse:
    """After a POST: see the result with a GET (303), so a reload does not post again."""
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def error_page(request: Request, status: int, detail: str) -> HTMLResponse:
    """A refusal as a page; ``detail`` is a catalogue key or the API's own message."""
    t = i18n.Translator(language(request))
    message = t(detail) if detail in i18n.CATALOGUE[t.lang] else detail
    return page(request, "error.html", status=status, message=message)


def login_redirect(request: Request, message: str) -> Response:
    """To the login page with why (the stale token cookie goes)."""
    response = redirect(f"{session.PATH}/login?{urlencode({'message': message})}")
    session.clear_cookie(request, response, session.COOKIE)
    return response


class ConsoleRoute(APIRoute):
    """A console route: a missing or expired login leads to the login page, and any other
    refusal (403, 404, 409, 422, ...) is a page with the same status and the reason."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except session.LoginRequired as exc:
                return login_redirect(request, exc.message)
            except HTTPException as exc:
                return error_page(request, exc.status_code, str(exc.detail))
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
                return error_page(request, 422, problems)

        return guarded
