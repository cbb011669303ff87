"""Who is using the console: the token cookie, CSRF tokens, and the caller dependencies.

The console keeps the ES256 token that ``/oauth/token`` issues in an HttpOnly, SameSite=Strict
cookie scoped to ``/console``, and decides the caller from it through the API's own
``gateway.api.deps.caller``, so a page meets the same token checks, rate limit, scopes and
row-level security as an API request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request, Response

from gateway.api import deps
from gateway.api.deps import State
from gateway.auth import Caller

PATH = "/console"
COOKIE = "aidlink_console"
# Before login there is no token to bind a CSRF token to: a random nonce in its own cookie.
LOGIN_COOKIE = "aidlink_console_login"
CSRF_FIELD = "csrf"


class LoginRequired(Exception):
    """No usable token: the console answers with the login page and ``message`` (a key)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def csrf_token(secret: bytes, token: str) -> str:
    """The CSRF token of a session: an HMAC of its bearer token under the server secret, so
    only a page served to the cookie's holder can carry it."""
    return hmac.new(secret, b"aidlink-console-csrf\x00" + token.encode(),
                    hashlib.sha256).hexdigest()


def login_csrf_token(secret: bytes, nonce: str) -> str:
    """The login form's CSRF token, bound to the nonce in the login cookie."""
    return hmac.new(secret, b"aidlink-console-login\x00" + nonce.encode(),
                    hashlib.sha256).hexdigest()


def new_login_nonce() -> str:
    """A fresh nonce for the login cookie."""
    return secrets.token_urlsafe(24)


def is_https(request: Request) -> bool:
    """Whether the browser reached us over https (directly or behind a TLS proxy)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def set_cookie(request: Request, response: Response, name: str, value: str,
               max_age: int | None = None) -> None:
    """A console cookie: HttpOnly, SameSite=Strict, Path=/console, Secure over https."""
    response.set_cookie(name, value, max_age=max_age, path=PATH, httponly=True,
                        samesite="strict", secure=is_https(request))


def clear_cookie(request: Request, response: Response, name: str) -> None:
    """Remove a console cookie with the attributes it was set with."""
    response.delete_cookie(name, path=PATH, httponly=True, samesite="strict",
                           secure=is_https(request))


def session_token(request: Request) -> str | None:
    """The bearer token in the console cookie, if any."""
    token = request.cookies.get(COOKIE, "").strip()
    return token or None


def console_caller(request: Request, state: State) -> Caller:
    """The caller, from the cookie's token, through the API's own caller dependency."""
    token = session_token(request)
    if token is None:
        raise LoginRequired("login.required")
    try:
        return deps.authenticate(state, f"Bearer {token}")
    except HTTPException as exc:
        if exc.status_code == 401:
            raise LoginRequired("login.expired" if "expired" in str(exc.detail)
                                else "login.required") from exc
        raise


ConsoleCaller = Annotated[Caller, Depends(console_caller)]


def devices_reader(who: ConsoleCaller) -> Caller:
    """A console user that may see the principal's devices (the API's rule)."""
    return deps.devices_reader(who)


DevicesReader = Annotated[Caller, Depends(devices_reader)]


def scoped_connection(state: State, who: ConsoleCaller) -> Iterator[psycopg.Connection[Any]]:
    """The API's row-level-security connection, for the console's caller."""
    yield from deps.scoped_connection(state, who)


# Committed before the answer, as the API's (gateway/api/deps.py).
ScopedConn = Annotated[psycopg.Connection[Any], Depends(scoped_connection, scope="function")]


async def csrf_checked(request: Request, state: State, who: ConsoleCaller) -> Caller:
    """The caller of a POST whose form carries this session's CSRF token; 403 otherwise."""
    token = session_token(request) or ""
    form = await request.form()
    given = form.get(CSRF_FIELD)
    if not isinstance(given, str) or not hmac.compare_digest(
            given, csrf_token(state.secret, token)):
        raise HTTPException(403, "csrf")
    return who


CsrfCaller = Annotated[Caller, Depends(csrf_checked)]
