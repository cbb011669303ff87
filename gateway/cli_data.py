"""``aidlink data …``: retention of measurement data and the daily aggregates."""

from __future__ import annotations

import click
import psycopg

from adapters.model import dumps
from gateway import retention
from gateway.cli_common import connect, fail, settings_of


@click.group("data")
def data_group() -> None:
    """Data lifecycle: per-principal retention and daily aggregates."""


@data_group.command("retention")
@click.option("--dry-run", is_flag=True,
              help="Count what each principal's policy no longer keeps; remove nothing.")
@click.pass_context
def data_retention(ctx: click.Context, dry_run: bool) -> None:
    """Remove observations and raw payloads past each principal's retention; print JSON."""
    with connect(settings_of(ctx)) as conn:
        try:
            result = retention.apply_retention(conn, dry_run=dry_run)
        except retention.RetentionBusyError as exc:
            fail(str(exc))
        except psycopg.Error as exc:
            fail(f"retention: {str(exc).strip().splitlines()[0]}")
    click.echo(dumps(result))
    if "error" in result:
        fail(str(result["error"]))


@data_group.command("refresh-aggregates")
@click.pass_context
def data_refresh_aggregates(ctx: click.Context) -> None:
    """Bring the daily aggregates (observation_daily) up to date; print JSON."""
    with connect(settings_of(ctx)) as conn:
        try:
            result = retention.refresh_aggregates(conn)
        except psycopg.Error as exc:
            fail(f"refresh of observation_daily: {str(exc).strip().splitlines()[0]}")
    click.echo(dumps(result))
