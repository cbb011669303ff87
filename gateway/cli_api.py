"""``aidlink api``: the HTTP API alone, for deployments that run the gateway as a process of
its own (one container each); ``aidlink up`` runs both in one process instead."""

from __future__ import annotations

import logging
import socket

import click
import psycopg
import uvicorn

from gateway import db
from gateway.api.app import create_app
from gateway.cli_common import fail, settings_of
from gateway.logs import configure_logging
from gateway.settings import (
    ConfigurationError,
    Settings,
    ca_passphrase,
    database_url,
    server_secret,
)
from gateway.up import _ApiServer as ApiServer

log = logging.getLogger("aidlink.api")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def _address(settings: Settings, host: str | None, port: int | None) -> tuple[str, int]:
    """Flag, else AIDLINK_API_HOST/AIDLINK_API_PORT when set, else this command's defaults.

    Settings' own defaults are those of ``aidlink up``, so only values the environment gave
    count here.
    """
    given = settings.model_fields_set
    if host is None:
        host = settings.api_host if "api_host" in given else DEFAULT_HOST
    if port is None:
        port = settings.api_port if "api_port" in given else DEFAULT_PORT
    return host, port


def _check_schema(url: str) -> None:
    """Refuse a database the API cannot serve: unreachable, or migrations not (all) applied.

    Without this the API would start and answer every request with a server error.
    """
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    except psycopg.errors.UndefinedTable:
        fail("database has no aidlink schema; run `aidlink db migrate`")
    except psycopg.Error as exc:
        fail(f"database: {str(exc).strip().splitlines()[0]}")
    pending = [name for name in db.migration_names() if name not in done]
    if pending:
        fail(f"database lacks {len(pending)} migration(s), first {pending[0]}; "
             "run `aidlink db migrate`")


def _listen(host: str, port: int) -> socket.socket:
    """Bind before serving, so a taken or wrong address ends the command with its reason."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror}")
    sock.set_inheritable(True)
    return sock


@click.command("api")
@click.option("--host", default=None,
              help=f"Address to listen on [default: AIDLINK_API_HOST, else {DEFAULT_HOST}; "
                   "0.0.0.0 in a container].")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help=f"Port to listen on [default: AIDLINK_API_PORT, else {DEFAULT_PORT}].")
@click.pass_context
def api_cmd(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the HTTP API on the configured database until SIGTERM/SIGINT."""
    settings = settings_of(ctx)
    configure_logging(settings.log_format)
    try:
        url = database_url(settings)
        secret = server_secret(settings)
        passphrase = ca_passphrase(settings)
    except ConfigurationError as exc:
        fail(str(exc))
    try:
        where = _where(url)
    except psycopg.ProgrammingError as exc:
        # psycopg's words, e.g. 'invalid URI query parameter: "foo"'.
        fail(f"AIDLINK_DATABASE_URL is not a PostgreSQL URL: {str(exc).strip()}")
    _check_schema(url)
    host, port = _address(settings, host, port)
    sock = _listen(host, port)
    app = create_app(database_url=url, secret=secret, ca_passphrase=passphrase,
                     broker_dir=settings.broker_dir,
                     token_ttl_seconds=settings.token_ttl_seconds)
    # ApiServer: `aidlink up`'s uvicorn server, which ends with status 0 on SIGTERM instead
    # of re-raising the signal. No access log: request lines carry patient references in
    # their query strings, and reads of patient data are recorded in the access log table.
    # log_config=None leaves the format to the process's logging set-up, not uvicorn's own.
    server = ApiServer(uvicorn.Config(app, log_config=None, access_log=False,
                                      timeout_graceful_shutdown=10))
    log.info("API on http://%s:%d (database %s)", host, port, where)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    log.info("API stopped")


def _where(url: str) -> str:
    """The database's host, port and name, without the password, for the log."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
