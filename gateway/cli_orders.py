"""``aidlink order import``, ``aidlink report lead-times`` and ``aidlink device swap``:
deliveries against the ordering portal's orders, and swaps of faulty devices."""

from __future__ import annotations

import sys
from typing import Any

import click

from adapters.model import dumps
from gateway.cli_common import actor, connect, fail, settings_of
from gateway.cli_lifecycle import report_group
from gateway.cli_provisioning import device_group
from gateway.settings import server_secret
from provisioning import lead_times, orders, swap
from provisioning.errors import InvalidInputError


@click.group("order")
def order_group() -> None:
    """Orders from the ordering portal (webSesam)."""


@order_group.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8-sig"))
@click.pass_context
def order_import(ctx: click.Context, file: Any) -> None:
    """Import orders from CSV (order_id, principal, patient, ordered_at, unit, model,
    article_number); refused rows are named by line on stderr and make the exit status 1."""
    settings = settings_of(ctx)
    text = file.read()
    with connect(settings) as conn:
        result = orders.import_csv(conn, server_secret(settings), text, actor=actor())
    for refusal in result["refused"]:
        click.echo(f"aidlink: refused: {refusal['reason']}", err=True)
    click.echo(dumps(result))
    if result["refused"]:
        sys.exit(1)


@order_group.command("list")
@click.option("--principal", default=None, help="Only this principal's orders.")
@click.option("--state", type=click.Choice(lead_times.ORDER_STATES), default="all",
              show_default=True)
@click.option("--limit", type=click.IntRange(1, 5000), default=500, show_default=True)
@click.pass_context
def order_list(ctx: click.Context, principal: str | None, state: str, limit: int) -> None:
    """Orders oldest first as JSON lines, with the delivering device and the lead time in
    working days."""
    with connect(settings_of(ctx)) as conn:
        rows = lead_times.list_orders(conn, principal=principal, state=state, limit=limit)
    for row in rows:
        click.echo(dumps(row))


@report_group.command("lead-times")
@click.option("--principal", default=None, help="One principal only.")
@click.option("--month", default=None, help="One month only (YYYY-MM).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of JSON lines.")
@click.pass_context
def report_lead_times(ctx: click.Context, principal: str | None, month: str | None,
                      as_csv: bool) -> None:
    """Lead times in working days from order to delivery, per principal and month."""
    try:
        first = None if month is None else lead_times.parse_month(month)
    except InvalidInputError as exc:
        fail(f"--month: {exc}", 2)
    with connect(settings_of(ctx)) as conn:
        rows = lead_times.lead_times(conn, principal=principal, month=first)
    if as_csv:
        click.echo(lead_times.to_csv(rows), nl=False)
        return
    for row in rows:
        click.echo(dumps(row))


@device_group.command("swap")
@click.argument("old")
@click.option("--new", "new", required=True, help="The device from stock that replaces OLD.")
@click.option("--fault", required=True, help="What is wrong with OLD (kept in its history).")
@click.option("--reason", default=None, help="Why, if more than the fault.")
@click.pass_context
def device_swap(ctx: click.Context, old: str, new: str, fault: str,
                reason: str | None) -> None:
    """Replace a faulty device at its patient by one in stock, in one step."""
    with connect(settings_of(ctx)) as conn:
        click.echo(dumps(swap.swap(conn, old_id=old, new_id=new, fault=fault, actor=actor(),
                                   reason=reason)))


__all__ = ["order_group"]
