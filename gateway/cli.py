"""The ``aidlink`` command line (DESIGN.md: command line)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import psycopg

from adapters.errors import DecodeError, UnknownChannelError
from adapters.model import DecodeContext, dumps
from adapters.registry import ADAPTERS, decode
from gateway import db, profiles
from gateway.cli_common import fail, settings_of
from gateway.settings import (
    ConfigurationError,
    database_url,
    load_settings,
)


@click.group()
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Data directory (AIDLINK_HOME; default .aidlink).")
@click.pass_context
def main(ctx: click.Context, home: Path | None) -> None:
    """aidlink: device fleet and connectivity gateway for assistive aids in home care."""
    try:
        ctx.ensure_object(dict)["settings"] = load_settings(home=home)
    except ValueError as exc:
        fail(f"settings: {exc}")


@main.command("decode")
@click.argument("channel")
@click.argument("payload")
@click.option("--profile", default=None, help="Firmware profile (device zone and quirks).")
@click.option("--zone", default=None,
              help="Zone of the device's wall clock [default: the profile's, else "
                   "Europe/Stockholm].")
def decode_cmd(channel: str, payload: str, profile: str | None, zone: str | None) -> None:
    """Decode PAYLOAD (hex, or - for raw bytes on stdin) as CHANNEL; print canonical JSON."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    zone_given = zone is not None
    zone = zone or "Europe/Stockholm"

    zone_name = zone
    if profile is not None:
        try:
            chosen = profiles.load(profile)
        except profiles.ProfileError as exc:
            fail(str(exc), 2)
        if channel not in chosen.channels:
            fail(f"channel {channel!r} is not one of profile {profile}: "
                  f"{', '.join(chosen.channels)}", 2)
        zone_name = zone if zone_given else chosen.zone
    if payload == "-":
        data = sys.stdin.buffer.read()
    else:
        text = "".join(payload.split()).removeprefix("0x")
        try:
            data = bytes.fromhex(text)
        except ValueError:
            fail(f"{channel}: payload is not hex: {payload!r}", 2)
    try:
        ctx = DecodeContext(zone=ZoneInfo(zone_name))
    except (ZoneInfoNotFoundError, ValueError):
        fail(f"unknown zone {zone!r}", 2)
    try:
        records = decode(channel, data, ctx)
    except UnknownChannelError:
        fail(f"unknown channel {channel!r}; known: {', '.join(sorted(ADAPTERS))}", 2)
    except DecodeError as exc:
        fail(str(exc), 2)
    for record in records:
        click.echo(dumps(record.to_json()))


@main.group("profiles")
def profiles_group() -> None:
    """Firmware profiles (one file per device model)."""


@profiles_group.command("check")
def profiles_check() -> None:
    """Validate every profile; exit 1 listing each problem."""
    problems = profiles.check()
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        sys.exit(1)
    click.echo(dumps({"valid": profiles.names()}))


@profiles_group.command("list")
def profiles_list() -> None:
    """Print every valid profile as JSON lines."""
    for profile in profiles.by_model().values():
        click.echo(dumps(profile.model_dump(mode="json")))


@main.group("db")
def db_group() -> None:
    """The database schema."""


@db_group.command("migrate")
@click.pass_context
def db_migrate(ctx: click.Context) -> None:
    """Apply pending migrations (safe to re-run)."""
    settings = settings_of(ctx)
    try:
        applied = db.migrate(database_url(settings))
    except (ConfigurationError, db.MigrationError) as exc:
        fail(str(exc))
    except psycopg.OperationalError as exc:
        fail(f"database: {str(exc).strip().splitlines()[0]}")
    click.echo(dumps({"applied": applied}))


def _register_commands() -> None:
    from gateway.cli_api import api_cmd
    from gateway.cli_bulk import device_bulk
    from gateway.cli_clients import client_group, keys_group, token_cmd
    from gateway.cli_data import data_group
    from gateway.cli_devices import device_export, device_show, device_traceability
    from gateway.cli_gateway import gateway_cmd
    from gateway.cli_housekeeping import housekeeping_cmd
    from gateway.cli_lifecycle import licence_group, report_group
    from gateway.cli_models import model_group
    from gateway.cli_orders import order_group
    from gateway.cli_provisioning import device_group, principal_group
    from gateway.cli_security import broker_config_cmd, policy_group
    from gateway.cli_tools import bench_group, simulate_cmd
    from gateway.up import up_cmd

    device_group.add_command(device_bulk)
    for command in (device_show, device_export, device_traceability):
        device_group.add_command(command)
    main.add_command(order_group)
    main.add_command(model_group)
    for command in (principal_group, device_group, policy_group, broker_config_cmd,
                    licence_group, report_group, bench_group, simulate_cmd, up_cmd,
                    client_group, keys_group, token_cmd, data_group, gateway_cmd, api_cmd,
                    housekeeping_cmd):
        main.add_command(command)


_register_commands()
