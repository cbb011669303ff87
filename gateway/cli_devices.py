"""``aidlink device show|export|traceability``: one device, and the Sesam traceability CSV
out of and back into the registry (the commands of ``GET /v1/devices/{id}``,
``GET /v1/devices.csv`` and ``POST /v1/devices/traceability.csv``)."""

from __future__ import annotations

import csv
import io
from typing import Any

import click

from adapters.model import dumps
from gateway.cli_common import actor, connect, settings_of
from provisioning import licences, reports, service


@click.command("show")
@click.argument("device")
@click.pass_context
def device_show(ctx: click.Context, device: str) -> None:
    """One device as JSON (the fields GET /v1/devices/ID answers; never its credentials)."""
    with connect(settings_of(ctx)) as conn:
        row = service.get_device(conn, device)
    click.echo(dumps({"id": row["id"], "principal": row["principal_code"],
                      "client_id": row["client_id"], "model": row["model"],
                      "serial": row["serial"], "state": row["state"],
                      "created_at": row["created_at"]}))


@click.command("export")
@click.option("--principal", default=None, help="One principal's devices only.")
@click.option("--csv", "as_csv", is_flag=True,
              help="CSV (as `aidlink device traceability` reads it) instead of JSON lines.")
@click.pass_context
def device_export(ctx: click.Context, principal: str | None, as_csv: bool) -> None:
    """Devices with their Sesam article and individual numbers, by device id."""
    with connect(settings_of(ctx)) as conn:
        if principal is not None:
            service.get_principal(conn, principal)
        text = reports.devices_csv(conn, principal=principal)
    if as_csv:
        click.echo(text, nl=False)
        return
    # The CSV is the one export the API serves too; every column is text, and an empty field
    # is a missing number, so reading it back loses nothing.
    for row in csv.DictReader(io.StringIO(text, newline="")):
        click.echo(dumps({key: value or None for key, value in row.items()}))


@click.command("traceability")
@click.argument("source", metavar="FILE", type=click.File("r", encoding="utf-8-sig"))
@click.pass_context
def device_traceability(ctx: click.Context, source: Any) -> None:
    """Set Sesam numbers from a CSV (as `aidlink device export --csv` writes it; - for
    stdin), all lines or none; prints how many lines were read and changed."""
    text = source.read()
    with connect(settings_of(ctx)) as conn:
        result = licences.import_devices_csv(conn, text, actor=actor())
    click.echo(dumps(result))
