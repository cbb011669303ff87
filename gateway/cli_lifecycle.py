"""``aidlink device return|recondition|retire|transfer``, ``aidlink licence …`` and
``aidlink report …``: the devices centre's daily work after onboarding."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import click

from adapters.model import dumps
from gateway.cli_common import actor, connect, fail, publish_command, settings_of, sync_broker
from gateway.cli_provisioning import device_group
from gateway.settings import Settings, ca_passphrase
from provisioning import downlink, licences, lifecycle, onboarding, reports


def _echo_rows(rows: Iterable[dict[str, Any]]) -> None:
    for row in rows:
        click.echo(dumps(row))


@device_group.command("return")
@click.argument("device")
@click.option("--reason", required=True)
@click.option("--fault", default=None, help="The fault the patient or staff reported.")
@click.pass_context
def device_return(ctx: click.Context, device: str, reason: str, fault: str | None) -> None:
    """Take a device back from its patient; its assignment ends now."""
    with connect(settings_of(ctx)) as conn:
        click.echo(dumps(lifecycle.return_device(conn, device_id=device, actor=actor(),
                                                 reason=reason, fault=fault)))


@device_group.command("recondition")
@click.argument("device")
@click.option("--reason", default=None, help="Why (required when starting).")
@click.option("--confirm", is_flag=True,
              help="Confirm the wipe (a device wiped by hand): give the request's --nonce.")
@click.option("--nonce", default=None, help="The nonce of the wipe request being confirmed.")
@click.option("--wiped-at", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z"]), default=None,
              help="When the device was wiped, e.g. 2026-11-20T10:15:00+01:00 (default: now).")
@click.option("--finish", is_flag=True, help="Finish: back in stock once the wipe is confirmed.")
@click.pass_context
def device_recondition(ctx: click.Context, device: str, reason: str | None, confirm: bool,
                       nonce: str | None, wiped_at: datetime | None, finish: bool) -> None:
    """Start reconditioning (unpair, send a retained wipe), confirm the wipe (revoking the
    device's credentials), or finish it (back in stock)."""
    settings = settings_of(ctx)
    if confirm and finish:
        fail("give either --confirm or --finish, not both", 2)
    if finish:
        with connect(settings) as conn:
            result = lifecycle.finish_reconditioning(conn, device_id=device, actor=actor())
            click.echo(dumps(_with_broker(result, sync_broker(conn, settings))))
        return
    if confirm:
        _confirm_wipe(settings, device, nonce, wiped_at, reason)
        return
    if reason is None:
        fail("give --reason to start reconditioning (or --confirm or --finish)", 2)
    with connect(settings) as conn:
        wipe = lifecycle.start_reconditioning(conn, device_id=device, actor=actor(),
                                              reason=reason)
        # Retained, so a device offline now finds it when it connects; what the broker does
        # not accept now stays pending for the gateway's downlink round.
        delivered = downlink.deliver_wipes(conn, _retained_publisher(settings),
                                           actor=actor(), device_id=device)
    click.echo(dumps({"device_id": wipe.device_id, "topic": wipe.topic,
                      "payload": wipe.payload,
                      "published": any(d["published"] for d in delivered)}))


def _confirm_wipe(settings: Settings, device: str, nonce: str | None,
                  wiped_at: datetime | None, reason: str | None) -> None:
    """Record a wipe confirmed by hand, as ``POST /v1/devices/{id}/recondition/confirm``."""
    if nonce is None:
        fail("give --nonce, the nonce of the wipe request being confirmed", 2)
    # The format demands the UTC offset, so the moment is never a local guess.
    moment = datetime.now(UTC) if wiped_at is None else wiped_at
    with connect(settings) as conn:
        result = lifecycle.confirm_wipe(conn, device_id=device, nonce=nonce,
                                        confirmed_at=moment, actor=actor(),
                                        reason=reason or "the wipe was confirmed by hand")
        # The revoked credentials reach the broker now, and its retained wipe is removed.
        result = _with_broker(result, sync_broker(conn, settings))
        downlink.deliver_wipes(conn, _retained_publisher(settings), actor=actor(),
                               device_id=device)
    click.echo(dumps(result))


def _retained_publisher(settings: Settings) -> downlink.Publish:
    return lambda topic, payload: publish_command(settings, topic, payload, retain=True)


@device_group.command("retire")
@click.argument("device")
@click.option("--reason", required=True)
@click.pass_context
def device_retire(ctx: click.Context, device: str, reason: str) -> None:
    """Take a device out of service for good."""
    settings = settings_of(ctx)
    with connect(settings) as conn:
        result = lifecycle.retire(
            conn, device_id=device, actor=actor(), reason=reason,
            revoke_credentials=_revoker(conn, settings, "cessation_of_operation"))
        click.echo(dumps(_with_broker(result, sync_broker(conn, settings))))


@device_group.command("transfer")
@click.argument("device")
@click.option("--to", "to_principal", required=True, help="The new owner's code.")
@click.option("--reason", required=True)
@click.pass_context
def device_transfer(ctx: click.Context, device: str, to_principal: str, reason: str) -> None:
    """Move a device in stock to another principal (history stays split by owner)."""
    settings = settings_of(ctx)
    with connect(settings) as conn:
        result = lifecycle.transfer(
            conn, device_id=device, to_principal=to_principal, actor=actor(), reason=reason,
            revoke_credentials=_revoker(conn, settings, "affiliation_changed"))
        click.echo(dumps(_with_broker(result, sync_broker(conn, settings))))


@device_group.command("reissue")
@click.argument("device")
@click.option("--csr", type=click.File("r"), default=None, help="The device's own CSR (PEM).")
@click.pass_context
def device_reissue(ctx: click.Context, device: str, csr: Any) -> None:
    """New credentials for a device before it is used again."""
    settings = settings_of(ctx)
    with connect(settings) as conn:
        result = onboarding.reissue(conn, ca_passphrase(settings), device_id=device,
                                    actor=actor(), csr_pem=None if csr is None else csr.read())
        # A reissued device leaves the ACL's deny list only when the broker reloads.
        result = _with_broker(result, sync_broker(conn, settings))
    click.echo(dumps(result))


def _with_broker(result: dict[str, Any], broker: dict[str, Any] | None) -> dict[str, Any]:
    return {**result, "broker": broker} if broker is not None else result


def _revoker(conn: Any, settings: Settings, reason: str) -> lifecycle.RevokeHook:
    return onboarding.revoke_hook(conn, ca_passphrase(settings), actor(), reason)


@click.group("licence")
def licence_group() -> None:
    """Products, vendors, licence terms and the licences devices hold."""


def _money(value: str, field: str) -> Decimal:
    try:
        return Decimal(value)
    except InvalidOperation:
        fail(f"{field} {value!r} is not an amount in SEK (e.g. 300.00)", 2)


@licence_group.command("vendor")
@click.argument("code")
@click.option("--name", required=True)
@click.pass_context
def licence_vendor(ctx: click.Context, code: str, name: str) -> None:
    """Register a vendor."""
    with connect(settings_of(ctx)) as conn:
        click.echo(dumps(licences.add_vendor(conn, code=code, name=name)))


@licence_group.command("product")
@click.argument("article")
@click.option("--name", required=True)
@click.option("--class", "product_class", required=True)
@click.option("--vendor", required=True)
@click.pass_context
def licence_product(ctx: click.Context, article: str, name: str, product_class: str,
                    vendor: str) -> None:
    """Register a product by its article number."""
    with connect(settings_of(ctx)) as conn:
        click.echo(dumps(licences.add_product(conn, article_number=article, name=name,
                                              product_class=product_class, vendor=vendor)))


@licence_group.command("terms")
@click.argument("code")
@click.option("--article", required=True)
@click.option("--period", type=click.Choice(["monthly", "yearly"]), required=True)
@click.option("--price", required=True, help="Subscription price per period, SEK.")
@click.option("--acquisition", type=click.Choice(["rent", "buy"]), required=True)
@click.option("--device-included", is_flag=True)
@click.option("--device-price", default=None, help="Device price, SEK, when not included.")
@click.pass_context
def licence_terms(ctx: click.Context, code: str, article: str, period: str, price: str,
                  acquisition: str, device_included: bool, device_price: str | None) -> None:
    """Register licence terms for a product."""
    with connect(settings_of(ctx)) as conn:
        click.echo(dumps(licences.add_terms(
            conn, code=code, article_number=article, period=period,
            price=_money(price, "--price"), device_included=device_included,
            acquisition=acquisition,
            device_price=None if device_price is None else _money(device_price,
                                                                  "--device-price"))))


@licence_group.command("start")
@click.argument("device")
@click.option("--terms", required=True)
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), default=None)
@click.option("--principal", default=None, help="Who pays (default: the owner).")
@click.option("--unit", default=None, help="The paying unit (cost centre).")
@click.pass_context
def licence_start(ctx: click.Context, device: str, terms: str, start: Any, end: Any,
                  principal: str | None, unit: str | None) -> None:
    """Give a device a licence."""
    with connect(settings_of(ctx)) as conn:
        click.echo(dumps(licences.start_licence(
            conn, device_id=device, terms=terms, start_date=start.date(), actor=actor(),
            principal=principal, unit=unit, end_date=None if end is None else end.date())))


@licence_group.command("list")
@click.option("--device", default=None)
@click.option("--principal", default=None)
@click.pass_context
def licence_list(ctx: click.Context, device: str | None, principal: str | None) -> None:
    """Licences as JSON lines."""
    with connect(settings_of(ctx)) as conn:
        _echo_rows(licences.list_licences(conn, device_id=device, principal=principal))


@licence_group.command("end")
@click.argument("licence", type=int)
@click.option("--on", "last_day", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Its last day [default: today].")
@click.option("--reason", required=True, help="Why it ends (kept in the device's history).")
@click.pass_context
def licence_end(ctx: click.Context, licence: int, last_day: Any, reason: str) -> None:
    """Set the last day of licence LICENCE (its id); prints the licence."""
    end = date.today() if last_day is None else last_day.date()
    with connect(settings_of(ctx)) as conn:
        click.echo(dumps(licences.end_licence(conn, licence_id=licence, end_date=end,
                                              actor=actor(), reason=reason)))


@click.group("report")
def report_group() -> None:
    """Reports as JSON lines, or CSV with --csv."""


def _report(ctx: click.Context, name: str, as_csv: bool,
            make: Callable[[Any], list[dict[str, Any]]]) -> None:
    with connect(settings_of(ctx)) as conn:
        rows = make(conn)
    if as_csv:
        click.echo(reports.to_csv(name, rows), nl=False)
    else:
        _echo_rows(rows)


_principal = click.option("--principal", default=None, help="One principal only.")
_csv = click.option("--csv", "as_csv", is_flag=True, help="CSV instead of JSON lines.")


@report_group.command("costs")
@click.option("--month", type=click.DateTime(["%Y-%m"]), required=True)
@_principal
@_csv
@click.pass_context
def report_costs(ctx: click.Context, month: Any, principal: str | None, as_csv: bool) -> None:
    """Monthly cost per principal and unit at cost price."""
    _report(ctx, "costs", as_csv, lambda c: reports.monthly_costs(
        c, month=month.date(), principal=principal))


@report_group.command("expiring")
@click.option("--days", type=click.IntRange(0, 3650), required=True)
@_principal
@_csv
@click.pass_context
def report_expiring(ctx: click.Context, days: int, principal: str | None,
                    as_csv: bool) -> None:
    """Licences ending within DAYS."""
    _report(ctx, "expiring", as_csv, lambda c: reports.expiring_licences(
        c, within_days=days, principal=principal))


@report_group.command("unlicensed")
@_principal
@_csv
@click.pass_context
def report_unlicensed(ctx: click.Context, principal: str | None, as_csv: bool) -> None:
    """Devices at patients without a licence."""
    _report(ctx, "unlicensed", as_csv, lambda c: reports.unlicensed_devices(
        c, principal=principal))


@report_group.command("idle")
@click.option("--days", type=click.IntRange(1, 3650), required=True)
@_principal
@_csv
@click.pass_context
def report_idle(ctx: click.Context, days: int, principal: str | None, as_csv: bool) -> None:
    """Licences held by devices in stock or without readings for DAYS."""
    _report(ctx, "idle", as_csv, lambda c: reports.idle_licences(
        c, idle_days=days, principal=principal))


@report_group.command("deliveries")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), required=True)
@_principal
@_csv
@click.pass_context
def report_deliveries(ctx: click.Context, since: Any, until: Any, principal: str | None,
                      as_csv: bool) -> None:
    """Devices delivered per product class, principal and month."""
    _report(ctx, "deliveries", as_csv, lambda c: reports.deliveries(
        c, since=since.date(), until=until.date(), principal=principal))


@report_group.command("overdue")
@_principal
@_csv
@click.pass_context
def report_overdue(ctx: click.Context, principal: str | None, as_csv: bool) -> None:
    """Devices still with a patient after their assignment's planned end."""
    _report(ctx, "overdue", as_csv, lambda c: reports.overdue_assignments(
        c, principal=principal))


__all__ = ["licence_group", "report_group"]
