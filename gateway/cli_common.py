"""Helpers shared by the command-line modules: errors, settings, the database."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click
import psycopg

from gateway.mqtt import new_client, parse_mqtt_url
from gateway.settings import (
    ConfigurationError,
    Settings,
    ca_passphrase,
    database_url,
    mqtt_url,
)
from provisioning import broker_config
from provisioning.errors import ProvisioningError


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``aidlink: message`` on stderr and exit with ``code``."""
    click.echo(f"aidlink: {message}", err=True)
    sys.exit(code)


def settings_of(ctx: click.Context) -> Settings:
    """The settings the main group built."""
    settings: Settings = ctx.ensure_object(dict)["settings"]
    return settings


def actor() -> str:
    """Who runs this command, for device histories."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@contextmanager
def connect(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """A database connection; any failure ends the command with a message naming it."""
    try:
        url = database_url(settings)
        with psycopg.connect(url, connect_timeout=5) as conn:
            yield conn
    except ConfigurationError as exc:
        fail(str(exc))
    except ProvisioningError as exc:
        fail(str(exc))
    except psycopg.errors.UndefinedTable as exc:
        fail(f"database has no aidlink schema ({exc.diag.message_primary}); "
              "run `aidlink db migrate`")
    except psycopg.OperationalError as exc:
        fail(f"database: {str(exc).strip().splitlines()[0]}")


def sync_broker(conn: psycopg.Connection[Any], settings: Settings) -> dict[str, Any] | None:
    """Commit, then refresh and reload the broker under AIDLINK_BROKER_DIR, if one is set."""
    conn.commit()
    result = broker_config.sync(conn, ca_passphrase(settings), settings.broker_dir)
    conn.commit()
    return result


def publish_command(settings: Settings, topic: str, payload: bytes, *,
                    retain: bool = False) -> bool:
    """Publish one QoS 1 command on the broker, if one is known; whether it was accepted."""
    try:
        target = parse_mqtt_url(mqtt_url(settings))
    except ConfigurationError:
        return False
    client = new_client("aidlink-cli", protocol=settings.mqtt_protocol)
    if target.username is not None:
        client.username_pw_set(target.username, target.password)
    try:
        client.connect(target.host, target.port)
        client.loop_start()
        info = client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        return info.is_published()
    except OSError:
        return False
    finally:
        client.disconnect()
        client.loop_stop()
