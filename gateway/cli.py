"""The ``aidlink`` command line (DESIGN.md: command line)."""

from __future__ import annotations

import getpass
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import psycopg

from adapters.errors import DecodeError, UnknownChannelError
from adapters.model import DecodeContext, dumps
from adapters.registry import ADAPTERS, decode
from gateway import db, profiles
from gateway.auth import Role, issue_token
from gateway.mqtt import MqttUrlError
from gateway.settings import (
    ConfigurationError,
    Settings,
    database_url,
    load_settings,
    mqtt_url,
    server_secret,
)
from provisioning import service
from provisioning.errors import ProvisioningError

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"aidlink: {message}", err=True)
    sys.exit(code)


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.ensure_object(dict)["settings"]
    return settings


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@contextmanager
def _connect(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    try:
        url = database_url(settings)
        with psycopg.connect(url, connect_timeout=5) as conn:
            yield conn
    except ConfigurationError as exc:
        _fail(str(exc))
    except ProvisioningError as exc:
        _fail(str(exc))
    except psycopg.errors.UndefinedTable as exc:
        _fail(f"database has no aidlink schema ({exc.diag.message_primary}); "
              "run `aidlink db migrate`")
    except psycopg.OperationalError as exc:
        _fail(f"database: {str(exc).strip().splitlines()[0]}")


@click.group()
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Data directory (AIDLINK_HOME; default .aidlink).")
@click.pass_context
def main(ctx: click.Context, home: Path | None) -> None:
    """aidlink: device fleet and connectivity gateway for assistive aids in home care."""
    try:
        ctx.ensure_object(dict)["settings"] = load_settings(home=home)
    except ValueError as exc:
        _fail(f"settings: {exc}")


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
            _fail(str(exc), 2)
        if channel not in chosen.channels:
            _fail(f"channel {channel!r} is not one of profile {profile}: "
                  f"{', '.join(chosen.channels)}", 2)
        zone_name = zone if zone_given else chosen.zone
    if payload == "-":
        data = sys.stdin.buffer.read()
    else:
        text = "".join(payload.split()).removeprefix("0x")
        try:
            data = bytes.fromhex(text)
        except ValueError:
            _fail(f"{channel}: payload is not hex: {payload!r}", 2)
    try:
        ctx = DecodeContext(zone=ZoneInfo(zone_name))
    except (ZoneInfoNotFoundError, ValueError):
        _fail(f"unknown zone {zone!r}", 2)
    try:
        records = decode(channel, data, ctx)
    except UnknownChannelError:
        _fail(f"unknown channel {channel!r}; known: {', '.join(sorted(ADAPTERS))}", 2)
    except DecodeError as exc:
        _fail(str(exc), 2)
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


@main.group("bench")
def bench_group() -> None:
    """Benchmarks; each writes its figures to a file."""


@bench_group.command("decode")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench-results/decode.json"), show_default=True)
@click.option("--seconds", type=click.FloatRange(0.05, 60), default=2.0, show_default=True,
              help="Time spent on each adapter.")
def bench_decode(out: Path, seconds: float) -> None:
    """Payloads per second per adapter on one core."""
    from gateway.bench import run_decode_bench

    out.parent.mkdir(parents=True, exist_ok=True)
    rates = run_decode_bench(out, seconds_per_adapter=seconds)
    for channel, rate in sorted(rates.items()):
        click.echo(f"{channel:12} {rate:>12,.0f} payloads/s")
    click.echo(f"written to {out}")


@bench_group.command("alarm")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench-results/alarm.json"), show_default=True)
@click.option("--count", type=click.IntRange(10, 100_000), default=200, show_default=True)
def bench_alarm(out: Path, count: int) -> None:
    """SCAIP alarm to stored and answered, on throwaway PostgreSQL and Mosquitto."""
    from gateway.bench_alarm import run_alarm_bench

    out.parent.mkdir(parents=True, exist_ok=True)
    figures = run_alarm_bench(out, count=count)
    click.echo(dumps(figures))
    click.echo(f"written to {out}")


@main.group("db")
def db_group() -> None:
    """The database schema."""


@db_group.command("migrate")
@click.pass_context
def db_migrate(ctx: click.Context) -> None:
    """Apply pending migrations (safe to re-run)."""
    settings = _settings(ctx)
    try:
        applied = db.migrate(database_url(settings))
    except (ConfigurationError, db.MigrationError) as exc:
        _fail(str(exc))
    except psycopg.OperationalError as exc:
        _fail(f"database: {str(exc).strip().splitlines()[0]}")
    click.echo(dumps({"applied": applied}))


@main.group("principal")
def principal_group() -> None:
    """Regions and municipalities (huvudmän)."""


@principal_group.command("add")
@click.argument("code")
@click.option("--name", required=True)
@click.option("--device-auth", type=click.Choice(service.DEVICE_AUTH), default="mtls",
              show_default=True, help="How devices of this principal authenticate.")
@click.pass_context
def principal_add(ctx: click.Context, code: str, name: str, device_auth: str) -> None:
    """Register a principal by its SCB code."""
    with _connect(_settings(ctx)) as conn:
        row = service.add_principal(conn, code, name, device_auth)
        conn.commit()
    click.echo(dumps(row))


@principal_group.command("list")
@click.pass_context
def principal_list(ctx: click.Context) -> None:
    """List principals as JSON lines."""
    with _connect(_settings(ctx)) as conn:
        for row in service.list_principals(conn):
            click.echo(dumps(row))


@main.group("device")
def device_group() -> None:
    """Devices: onboard, pair, assign, history."""


@device_group.command("onboard")
@click.option("--principal", required=True)
@click.option("--model", required=True)
@click.option("--serial", required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write the provisioning bundle (bundle.json) here.")
@click.option("--alarm-account", default=None, help="SIA DC-09 account of an alarm unit.")
@click.option("--firmware", default=None, help="Firmware version installed.")
@click.pass_context
def device_onboard(ctx: click.Context, principal: str, model: str, serial: str,
                   out: Path | None, alarm_account: str | None, firmware: str | None) -> None:
    """Onboard one device for a principal; prints its id and credentials as JSON."""
    settings = _settings(ctx)
    with _connect(settings) as conn:
        row = service.onboard_device(conn, principal=principal, model=model, serial=serial,
                                     actor=_actor(), alarm_account=alarm_account,
                                     firmware_version=firmware)
        conn.commit()
    with suppress(ConfigurationError):  # no broker known here: the bundle lacks its address
        row["mqtt_url"] = mqtt_url(settings)
    text = dumps(row)
    if out is not None:
        _write_private(out / "bundle.json", text + "\n")
    click.echo(text)


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, from the first byte on (it holds secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


@device_group.command("pair")
@click.argument("peripheral")
@click.option("--hub", required=True, help="The hub's device id.")
@click.pass_context
def device_pair(ctx: click.Context, peripheral: str, hub: str) -> None:
    """Pair a peripheral with the hub that forwards its values."""
    with _connect(_settings(ctx)) as conn:
        row = service.pair(conn, peripheral_id=peripheral, hub_id=hub, actor=_actor())
    click.echo(dumps(row))


@device_group.command("assign")
@click.argument("device")
@click.option("--patient", required=True, help="The patient reference (stored pseudonymised).")
@click.option("--basis", type=click.Choice(service.BASES), required=True)
@click.option("--unit", "prescribing_unit", default=None, help="Prescribing unit.")
@click.pass_context
def device_assign(ctx: click.Context, device: str, patient: str, basis: str,
                  prescribing_unit: str | None) -> None:
    """Assign a device in stock to a patient under HSL or SoL."""
    settings = _settings(ctx)
    with _connect(settings) as conn:
        row = service.assign(conn, server_secret(settings), device_id=device, patient=patient,
                             basis=basis, actor=_actor(), prescribing_unit=prescribing_unit)
    click.echo(dumps(row))


@device_group.command("history")
@click.argument("device")
@click.pass_context
def device_history(ctx: click.Context, device: str) -> None:
    """A device's life as JSON lines, oldest first."""
    with _connect(_settings(ctx)) as conn:
        for row in service.history(conn, device):
            click.echo(dumps(row))


@main.command("token")
@click.option("--principal", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--subject", default=None, help="Who the token is for (default: the role).")
@click.option("--ttl", type=click.IntRange(60, 30 * 86400), default=None,
              help="Lifetime in seconds.")
@click.pass_context
def token_cmd(ctx: click.Context, principal: str, role: str, subject: str | None,
              ttl: int | None) -> None:
    """Print a bearer token bound to one principal and role."""
    settings = _settings(ctx)
    try:
        url = database_url(settings)
    except ConfigurationError:
        url = None
    if url is not None:
        with _connect(settings) as conn:
            service.get_principal(conn, principal)
    click.echo(issue_token(server_secret(settings), principal=principal, role=Role(role),
                           subject=subject or f"cli-{role}",
                           ttl_seconds=ttl or settings.token_ttl_seconds))


@main.command("simulate")
@click.option("--scenario", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="Run a scenario file (see simulators/scenarios/).")
@click.option("--id", "ids", multiple=True, metavar="NAME=DEVICE",
              help="Fill a ${NAME} placeholder of the scenario with a registered id.")
@click.option("--dc09", default=None, metavar="HOST:PORT",
              help="DC-09 receiver for the scenario's alarm units.")
@click.option("--hub", "hub_id", default=None, help="The hub's client id (without --scenario).")
@click.option("--device", "devices", multiple=True, help="Peripheral ids (default: the hub).")
@click.option("--count", type=click.IntRange(0), default=1, show_default=True,
              help="Rounds to publish (0 = until interrupted).")
@click.option("--interval", type=click.FloatRange(0), default=5.0, show_default=True)
@click.option("--seed", type=int, default=1)
@click.pass_context
def simulate_cmd(ctx: click.Context, scenario: Path | None, ids: tuple[str, ...],
                 dc09: str | None, hub_id: str | None, devices: tuple[str, ...], count: int,
                 interval: float, seed: int) -> None:
    """Run simulated devices: a scenario file, or blood pressure cuffs behind one hub."""
    settings = _settings(ctx)
    try:
        broker = mqtt_url(settings)
    except ConfigurationError as exc:
        _fail(str(exc))
    if scenario is not None:
        _run_scenario(scenario, broker, settings.mqtt_protocol, ids, dc09)
        return
    if hub_id is None:
        _fail("give --scenario FILE, or --hub CLIENT for simulated cuffs")
    _run_cuffs(broker, settings.mqtt_protocol, hub_id, devices, count, interval, seed)


def _run_scenario(path: Path, broker: str, protocol: int, ids: tuple[str, ...],
                  dc09: str | None) -> None:
    from simulators.scenario import ScenarioError, run_file

    mapping = {}
    for item in ids:
        name, equals, value = item.partition("=")
        if not equals or not name or not value:
            _fail(f"--id {item!r} must look like NAME=DEVICE", 2)
        mapping[name] = value
    receiver = None
    if dc09 is not None:
        host, colon, port = dc09.rpartition(":")
        if not colon or not port.isdigit():
            _fail(f"--dc09 {dc09!r} must look like HOST:PORT", 2)
        receiver = (host, int(port))
    try:
        report = run_file(path, mqtt_url=broker, protocol=protocol, dc09=receiver, ids=mapping)
    except ScenarioError as exc:
        _fail(str(exc), 2)
    except (OSError, MqttUrlError) as exc:
        _fail(f"scenario {path}: {exc}")
    click.echo(dumps(report.to_json()))


def _run_cuffs(broker: str, protocol: int, hub_id: str, devices: tuple[str, ...], count: int,
               interval: float, seed: int) -> None:
    from simulators.bpm import payload_source
    from simulators.hub import Hub, HubError, run_fleet

    try:
        hub = Hub(broker, hub_id, protocol=protocol)
        hub.connect()
    except (MqttUrlError, HubError, OSError) as exc:
        _fail(str(exc))
    fleet = [(device_id, payload_source(seed + index))
             for index, device_id in enumerate(devices or (hub_id,))]
    stop = threading.Event()
    try:
        sent = run_fleet(hub, fleet, count=count, interval=interval, stop=stop)
    except KeyboardInterrupt:
        sent = -1
    except HubError as exc:
        _fail(str(exc))
    finally:
        hub.close()
    click.echo(dumps({"hub": hub_id, "published": sent}))


def _register_runtime_commands() -> None:
    from gateway.up import up_cmd

    main.add_command(up_cmd)


_register_runtime_commands()
