"""``aidlink client …``, ``aidlink keys …`` and ``aidlink token``: API clients and tokens."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from adapters.model import dumps
from gateway.auth import MAX_TOKEN_TTL_SECONDS, ROLE_SCOPES, SCOPES, Role, issue_token
from gateway.cli_common import actor, connect, fail, settings_of
from gateway.settings import ConfigurationError, Settings, server_secret
from gateway.token_keys import RETIRED_WINDOW, KeyRing, KeyRingError
from provisioning import api_clients, service

_ROLES = click.Choice([r.value for r in Role])
_SCOPES = click.Choice(list(SCOPES))


def _secret(settings: Settings) -> bytes:
    try:
        return server_secret(settings)
    except ConfigurationError as exc:
        fail(str(exc))


def key_ring(settings: Settings) -> KeyRing:
    """The token key ring of the configured database; failures end the command."""
    return KeyRing(lambda: connect(settings), _secret(settings))


@contextmanager
def _keys_failing() -> Iterator[None]:
    try:
        yield
    except KeyRingError as exc:
        fail(str(exc))


@click.command("token")
@click.option("--principal", required=True)
@click.option("--role", type=_ROLES, required=True)
@click.option("--scope", "scopes", type=_SCOPES, multiple=True,
              help="Scope the token grants (repeatable) [default: every scope of the role].")
@click.option("--subject", default=None, help="Who the token is for (default: cli-ROLE).")
@click.option("--ttl", type=click.IntRange(60, MAX_TOKEN_TTL_SECONDS), default=None,
              help="Lifetime in seconds [default: AIDLINK_TOKEN_TTL_SECONDS].")
@click.pass_context
def token_cmd(ctx: click.Context, principal: str, role: str, scopes: tuple[str, ...],
              subject: str | None, ttl: int | None) -> None:
    """Print a bearer token bound to one principal and role, signed by the database's key."""
    settings = settings_of(ctx)
    chosen = Role(role)
    lifetime = ttl or settings.token_ttl_seconds
    if lifetime > MAX_TOKEN_TTL_SECONDS:
        fail(f"AIDLINK_TOKEN_TTL_SECONDS {lifetime} exceeds the longest token lifetime,"
             f" {MAX_TOKEN_TTL_SECONDS} s")
    with connect(settings) as conn:
        service.get_principal(conn, principal)
        granted = api_clients.check_scopes(chosen, scopes) if scopes else None
    with _keys_failing():
        key = key_ring(settings).current()
    click.echo(issue_token(key, principal=principal, role=chosen,
                           subject=subject or f"cli-{role}", scopes=granted,
                           ttl_seconds=lifetime))


@click.group("client")
def client_group() -> None:
    """API clients: systems that get tokens with OAuth2 client credentials."""


@client_group.command("add")
@click.option("--principal", required=True)
@click.option("--role", type=_ROLES, required=True)
@click.option("--scope", "scopes", type=_SCOPES, multiple=True,
              help="Scope the client may ask for (repeatable) [default: every scope of the"
                   " role].")
@click.option("--name", required=True, help="What the client is, e.g. the EHR's name.")
@click.option("--client-id", default=None, help="Its id [default: a random ac-… id].")
@click.pass_context
def client_add(ctx: click.Context, principal: str, role: str, scopes: tuple[str, ...],
               name: str, client_id: str | None) -> None:
    """Register a client; prints it with its client_secret, shown this once only."""
    chosen = Role(role)
    with connect(settings_of(ctx)) as conn:
        row, secret = api_clients.add_client(
            conn, principal=principal, role=chosen, name=name, actor=actor(),
            scopes=scopes or sorted(ROLE_SCOPES[chosen]), client_id=client_id)
    click.echo(dumps({**row, "client_secret": secret}))


@client_group.command("list")
@click.option("--principal", default=None, help="Only this principal's clients.")
@click.pass_context
def client_list(ctx: click.Context, principal: str | None) -> None:
    """List clients as JSON lines (never their secrets)."""
    with connect(settings_of(ctx)) as conn:
        if principal is not None:
            service.get_principal(conn, principal)
        for row in api_clients.list_clients(conn, principal):
            click.echo(dumps(row))


@client_group.command("disable")
@click.argument("client_id")
@click.pass_context
def client_disable(ctx: click.Context, client_id: str) -> None:
    """Disable a client: it gets no more tokens; those it has run out."""
    with connect(settings_of(ctx)) as conn:
        row = api_clients.disable_client(conn, client_id)
    click.echo(dumps(row))


@click.group("keys")
def keys_group() -> None:
    """The keys that sign bearer tokens."""


@keys_group.command("rotate")
@click.pass_context
def keys_rotate(ctx: click.Context) -> None:
    """Make a new signing key current; the old one verifies until its tokens expire."""
    settings = settings_of(ctx)
    with _keys_failing():
        ring = key_ring(settings)
        ring.current()  # a database without keys gets its first one before the rotation
        kid = ring.rotate()
    click.echo(dumps({"kid": kid}))


@keys_group.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """List signing keys as JSON lines, newest first, with whether the JWKS still has them."""
    with connect(settings_of(ctx)) as conn:
        rows: list[tuple[Any, ...]] = conn.execute(
            "SELECT kid, created_at, retired_at, retired_at IS NULL OR retired_at > now() - %s"
            " FROM token_signing_keys ORDER BY created_at DESC", (RETIRED_WINDOW,),
        ).fetchall()
    for kid, created, retired, published in rows:
        click.echo(dumps({"kid": kid, "created_at": created, "retired_at": retired,
                          "current": retired is None, "published": bool(published)}))

