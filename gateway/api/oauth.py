"""OAuth 2.0 client credentials (RFC 6749 §4.4) and the JWK Set that checks the tokens.

``POST /oauth/token`` takes ``application/x-www-form-urlencoded`` parameters: ``grant_type``
(``client_credentials``), optionally ``scope`` (space-separated, a subset of the client's;
default all of them), and the client's credentials, either as HTTP Basic (RFC 6749 §2.3.1)
or as ``client_id`` and ``client_secret`` in the body. Errors are RFC 6749 §5.2 JSON:
``{"error": ..., "error_description": ...}``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote_plus

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from gateway.api.deps import Conn, State, rate_limit
from gateway.auth import SCOPES, Caller, Role, issue_token, scope_text
from gateway.token_keys import KeyRingError
from provisioning import api_clients

router = APIRouter()

GRANT_TYPE = "client_credentials"
_FORM = "application/x-www-form-urlencoded"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_MAX_PARAMETERS = 16


class _Refusal(Exception):
    """An RFC 6749 §5.2 error: the code, what was wrong, and the HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def response(self) -> JSONResponse:
        headers = dict(_NO_STORE)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="aidlink", charset="UTF-8"'
        return JSONResponse({"error": self.error, "error_description": self.description},
                            status_code=self.status, headers=headers)


async def token_form(request: Request) -> dict[str, str] | _Refusal:
    """The form parameters, or the refusal of a body that is not a valid form."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != _FORM:
        return _Refusal("invalid_request", f"the body must be {_FORM}, not {kind or 'untyped'}")
    try:
        text = (await request.body()).decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_PARAMETERS)
    except (UnicodeDecodeError, ValueError) as exc:
        return _Refusal("invalid_request", f"the body is not a valid form: {exc}")
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            # RFC 6749 §3.2: request parameters must not be repeated.
            return _Refusal("invalid_request", f"parameter {name} is given more than once")
        params[name] = value
    return params


Form = Annotated[dict[str, str] | _Refusal, Depends(token_form)]


def _credentials(params: dict[str, str], authorization: str | None) -> tuple[str, str]:
    """The client id and secret from HTTP Basic or the body (exactly one of them)."""
    in_body = "client_id" in params or "client_secret" in params
    if authorization is not None:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise _Refusal("invalid_client", f"client authentication must use HTTP Basic, not"
                                             f" {scheme or 'an empty Authorization header'}",
                           401)
        if in_body:
            raise _Refusal("invalid_request", "the client authenticated both by HTTP Basic and"
                                              " by client_id/client_secret in the body; use one")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _Refusal("invalid_client", "the HTTP Basic credentials are not base64 of"
                                             " UTF-8 text", 401) from None
        client_id, colon, secret = decoded.partition(":")
        if not colon:
            raise _Refusal("invalid_client", "the HTTP Basic credentials lack the ':' between"
                                             " client id and secret", 401)
        # RFC 6749 §2.3.1: both parts are form-encoded before they are joined.
        return unquote_plus(client_id), unquote_plus(secret)
    if not in_body:
        raise _Refusal("invalid_client", "no client authentication: use HTTP Basic or"
                                         " client_id and client_secret in the body", 401)
    client_id, secret = params.get("client_id", ""), params.get("client_secret", "")
    if not client_id or not secret:
        missing = "client_id" if not client_id else "client_secret"
        raise _Refusal("invalid_client", f"{missing} is missing or empty", 401)
    return client_id, secret


def _scopes(requested: str | None, client: dict[str, Any]) -> frozenset[str]:
    """The scopes to grant: those asked for, all of them within the client's."""
    own = frozenset(client["scopes"])
    if requested is None or not requested.strip():
        return own
    asked = frozenset(requested.split())
    unknown = sorted(asked - frozenset(SCOPES))
    if unknown:
        raise _Refusal("invalid_scope", f"unknown scope {', '.join(unknown)}; scopes are"
                                        f" {', '.join(SCOPES)}")
    beyond = sorted(asked - own)
    if beyond:
        raise _Refusal("invalid_scope", f"scope {', '.join(beyond)} is not granted to client"
                                        f" {client['client_id']} (its scopes:"
                                        f" {', '.join(sorted(own))})")
    return asked


_TOKEN_REQUEST = {"requestBody": {"required": True, "content": {_FORM: {"schema": {
    "type": "object", "required": ["grant_type"],
    "properties": {"grant_type": {"type": "string", "enum": [GRANT_TYPE]},
                   "scope": {"type": "string", "description": "space-separated scopes"},
                   "client_id": {"type": "string"}, "client_secret": {"type": "string"}},
}}}}}


@router.post("/oauth/token", openapi_extra=_TOKEN_REQUEST)
def token(form: Form, state: State, conn: Conn,
          authorization: Annotated[str | None, Header()] = None) -> JSONResponse:
    """Issue an access token to an API client (OAuth 2.0 client credentials grant)."""
    try:
        if isinstance(form, _Refusal):
            raise form
        client_id, secret = _credentials(form, authorization)
        try:
            client = api_clients.authenticate(conn, client_id, secret)
        except api_clients.ClientAuthError as exc:
            raise _Refusal("invalid_client", str(exc), 401) from exc
        grant = form.get("grant_type")
        if not grant:
            raise _Refusal("invalid_request", "grant_type is missing")
        if grant != GRANT_TYPE:
            raise _Refusal("unsupported_grant_type", f"grant_type {grant!r} is not supported;"
                                                     f" only {GRANT_TYPE} is")
        scopes = _scopes(form.get("scope"), client)
        refusal = api_clients.refusal_now(conn, client)
        if refusal is not None:
            raise _Refusal("unauthorized_client", refusal)
    except _Refusal as refused:
        return refused.response()
    role = Role(client["role"])
    rate_limit(state.limiter, Caller(principal=client["principal"], role=role,
                                     subject=client["client_id"], scopes=scopes))
    try:
        key = state.keys.current()
    except KeyRingError as exc:
        raise HTTPException(503, f"tokens cannot be issued: {exc}") from exc
    access = issue_token(key, principal=client["principal"], role=role,
                         subject=client["client_id"], scopes=scopes,
                         ttl_seconds=state.token_ttl_seconds)
    return JSONResponse({"access_token": access, "token_type": "Bearer",
                         "expires_in": state.token_ttl_seconds, "scope": scope_text(scopes)},
                        headers=_NO_STORE)


@router.get("/.well-known/jwks.json")
def jwks(state: State) -> JSONResponse:
    """The public keys that verify this server's tokens (RFC 7517 JWK Set)."""
    try:
        keys = state.keys.jwks()
    except KeyRingError as exc:
        raise HTTPException(503, f"keys cannot be read: {exc}") from exc
    # Short caching: a verifier meeting an unknown kid after a rotation fetches again anyway.
    return JSONResponse(keys, headers={"Cache-Control": "public, max-age=60"})
