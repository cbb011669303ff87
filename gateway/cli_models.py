"""``aidlink model pilot|promote|list|show`` and ``aidlink report participation|pilot``: new
device models piloted before rollout, and principals joining gradually."""

from __future__ import annotations

from typing import Any

import click

from adapters.model import dumps
from gateway.cli_common import actor, connect, settings_of
from gateway.cli_lifecycle import report_group
from provisioning import participation, pilot_report, pilots


@click.group("model")
def model_group() -> None:
    """Device models: pilots and their promotion to general use."""


@model_group.command("pilot")
@click.argument("model")
@click.option("--principal", "principals", multiple=True, help="A principal in the pilot.")
@click.option("--unit", "units", multiple=True, help="A unit (prescribing or paying) in it.")
@click.option("--max", "max_devices", type=click.IntRange(1), default=None,
              help="At most this many devices of the model in service.")
@click.option("--reason", default=None, help="Why (kept in the model's stage history).")
@click.pass_context
def model_pilot(ctx: click.Context, model: str, principals: tuple[str, ...],
                units: tuple[str, ...], max_devices: int | None, reason: str | None) -> None:
    """Put MODEL in a pilot limited to principals and/or units (or change its pilot)."""
    with connect(settings_of(ctx)) as conn:
        row = pilots.set_pilot(conn, model, principals=principals, units=units,
                               max_devices=max_devices, actor=actor(), reason=reason)
    click.echo(dumps(row))


@model_group.command("promote")
@click.argument("model")
@click.option("--reason", required=True, help="Why it is ready for general use.")
@click.pass_context
def model_promote(ctx: click.Context, model: str, reason: str) -> None:
    """Promote a piloted MODEL to general use."""
    with connect(settings_of(ctx)) as conn:
        click.echo(dumps(pilots.promote(conn, model, actor=actor(), reason=reason)))


@model_group.command("list")
@click.pass_context
def model_list(ctx: click.Context) -> None:
    """Models with a stage (any other model is in general use) as JSON lines."""
    with connect(settings_of(ctx)) as conn:
        for row in pilots.list_stages(conn):
            click.echo(dumps(row))


@model_group.command("show")
@click.argument("model")
@click.pass_context
def model_show(ctx: click.Context, model: str) -> None:
    """A model's stage, devices in service and stage history."""
    with connect(settings_of(ctx)) as conn:
        click.echo(dumps(pilots.describe(conn, model)))


def _emit(columns: tuple[str, ...], rows: list[dict[str, Any]], as_csv: bool) -> None:
    if as_csv:
        click.echo(participation.csv_of(columns, rows), nl=False)
        return
    for row in rows:
        click.echo(dumps(row))


_csv = click.option("--csv", "as_csv", is_flag=True, help="CSV instead of JSON lines.")


@report_group.command("participation")
@click.option("--principal", default=None, help="One principal only.")
@_csv
@click.pass_context
def report_participation(ctx: click.Context, principal: str | None, as_csv: bool) -> None:
    """Who participates since when, and who does not yet."""
    with connect(settings_of(ctx)) as conn:
        rows = participation.report(conn, principal=principal)
    _emit(participation.COLUMNS, rows, as_csv)


@report_group.command("pilot")
@click.argument("model")
@click.option("--principal", default=None, help="One principal's devices only.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="First day [default: the start of the pilot].")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Day after the last [default: now].")
@_csv
@click.pass_context
def report_pilot(ctx: click.Context, model: str, principal: str | None, since: Any,
                 until: Any, as_csv: bool) -> None:
    """MODEL's devices: readings per day, decode rejects, offline time, low battery, returns."""
    with connect(settings_of(ctx)) as conn:
        rows = pilot_report.pilot_report(
            conn, model, principal=principal,
            since=None if since is None else participation.start_of(since.date()),
            until=None if until is None else participation.start_of(until.date()))
    _emit(pilot_report.COLUMNS, rows, as_csv)


__all__ = ["model_group"]
