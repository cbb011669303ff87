"""``aidlink principal …`` and ``aidlink device …``: the technicians' commands."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from adapters.model import dumps
from gateway.cli_common import actor, connect, fail, settings_of, sync_broker
from gateway.settings import ca_passphrase, device_broker_url, server_secret
from provisioning import lifecycle, onboarding, participation, pki, service


@click.group("principal")
def principal_group() -> None:
    """Regions and municipalities (huvudmän)."""


@principal_group.command("add")
@click.argument("code")
@click.option("--name", required=True)
@click.option("--device-auth", type=click.Choice(service.DEVICE_AUTH), default="mtls",
              show_default=True, help="How devices of this principal authenticate.")
@click.option("--participates-from", "begins", type=click.DateTime(["%Y-%m-%d"]),
              default=None, help="The day it starts taking part [default: now].")
@click.option("--not-participating", is_flag=True,
              help="Registered only: set up later with `aidlink principal join`.")
@click.pass_context
def principal_add(ctx: click.Context, code: str, name: str, device_auth: str, begins: Any,
                  not_participating: bool) -> None:
    """Register a principal by its SCB code."""
    with connect(settings_of(ctx)) as conn:
        row = service.add_principal(
            conn, code, name, device_auth, participating=not not_participating,
            participates_from=None if begins is None else participation.start_of(begins.date()),
            actor=actor())
        conn.commit()
    click.echo(dumps(row))


@principal_group.command("join")
@click.argument("code")
@click.option("--from", "begins", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="The day it starts taking part [default: now].")
@click.pass_context
def principal_join(ctx: click.Context, code: str, begins: Any) -> None:
    """Make a principal registered as not participating take part: its policy and CA."""
    settings = settings_of(ctx)
    with connect(settings) as conn:
        row = participation.join(conn, ca_passphrase(settings), code, actor=actor(),
                                 start=None if begins is None else begins.date())
        conn.commit()
    click.echo(dumps(row))


@principal_group.command("list")
@click.pass_context
def principal_list(ctx: click.Context) -> None:
    """List principals as JSON lines."""
    with connect(settings_of(ctx)) as conn:
        for row in service.list_principals(conn):
            click.echo(dumps(row))


@principal_group.command("crl")
@click.argument("code")
@click.option("--pem", is_flag=True, help="PEM text instead of DER.")
@click.option("--out", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              default=None, help="Write the CRL to FILE [default: standard output].")
@click.pass_context
def principal_crl(ctx: click.Context, code: str, pem: bool, out: Path | None) -> None:
    """The principal's current CRL (DER, RFC 5280), re-signed only when the last one is near
    its next update or misses a revocation; with --out a JSON summary is printed."""
    stdout = sys.stdout.buffer
    if out is None and not pem and stdout.isatty():
        # Raw DER garbles the terminal; checked before the database is touched.
        fail("a DER CRL is binary: give --out FILE, pipe it, or use --pem", 2)
    settings = settings_of(ctx)
    with connect(settings) as conn:
        crl = pki.current_crl(conn, ca_passphrase(settings), code)
        # A re-signed CRL is stored with its new number; committed, the next call serves it.
        conn.commit()
    data = crl.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER)
    if out is None:
        stdout.write(data)
        stdout.flush()
        return
    try:
        out.write_bytes(data)
    except OSError as exc:
        fail(f"--out {out}: {exc.strerror or exc}")
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    click.echo(dumps({"principal": code, "out": str(out), "format": "pem" if pem else "der",
                      "crl_number": number, "next_update": crl.next_update_utc,
                      "revoked": len(crl)}))


@click.group("device")
def device_group() -> None:
    """Devices: onboard, pair, assign, history."""


# Optional on these three: the history records it when given.
_reason = click.option("--reason", default=None, help="Why, for the device's history.")


@device_group.command("onboard")
@click.option("--principal", required=True)
@click.option("--model", required=True)
@click.option("--serial", required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write the provisioning bundle (bundle.json) here.")
@click.option("--alarm-account", default=None, help="SIA DC-09 account of an alarm unit.")
@click.option("--firmware", default=None, help="Firmware version installed.")
@click.option("--csr", type=click.File("r"), default=None,
              help="The device's own CSR (PEM): its key is the one certified.")
@click.option("--unit", default=None, help="The unit it is for (a pilot may be limited to units).")
@_reason
@click.pass_context
def device_onboard(ctx: click.Context, principal: str, model: str, serial: str,
                   out: Path | None, alarm_account: str | None, firmware: str | None,
                   csr: Any, unit: str | None, reason: str | None) -> None:
    """Onboard one device for a principal; prints its id and credentials as JSON."""
    settings = settings_of(ctx)
    with connect(settings) as conn:
        # Read before onboarding, so a wrong AIDLINK_DEVICE_BROKER_URL onboards nothing (and
        # fails naming it); None (no broker known here) leaves the bundle without an address.
        broker_url = device_broker_url(settings)
        row = onboarding.onboard(conn, ca_passphrase(settings), principal=principal,
                                 model=model, serial=serial, actor=actor(),
                                 csr_pem=None if csr is None else csr.read(),
                                 alarm_account=alarm_account, firmware_version=firmware,
                                 unit=unit, broker_url=broker_url, reason=reason)
        conn.commit()
        if "mqtt_password" in row:
            # The broker admits a password device only once its password file holds it.
            broker = sync_broker(conn, settings)
            if broker is not None:
                row["broker"] = broker
    text = dumps(row)
    if out is not None:
        _write_private(out / "bundle.json", text + "\n")
        for field, name in (("certificate_pem", "certificate.pem"),
                            ("ca_chain_pem", "ca-chain.pem"), ("private_key_pem", "device.key")):
            if field in row:
                _write_private(out / name, row[field])
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
@_reason
@click.pass_context
def device_pair(ctx: click.Context, peripheral: str, hub: str, reason: str | None) -> None:
    """Pair a peripheral with the hub that forwards its values."""
    with connect(settings_of(ctx)) as conn:
        row = service.pair(conn, peripheral_id=peripheral, hub_id=hub, actor=actor(),
                           reason=reason)
    click.echo(dumps(row))


@device_group.command("assign")
@click.argument("device")
@click.option("--patient", required=True, help="The patient reference (stored pseudonymised).")
@click.option("--basis", type=click.Choice(service.BASES), required=True)
@click.option("--unit", "prescribing_unit", default=None, help="Prescribing unit.")
@click.option("--order", default=None,
              help="The portal order it delivers (default: the patient's oldest it fits).")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="The planned last day (today or later); the overdue report lists it after.")
@_reason
@click.pass_context
def device_assign(ctx: click.Context, device: str, patient: str, basis: str,
                  prescribing_unit: str | None, order: str | None, until: Any,
                  reason: str | None) -> None:
    """Assign a device in stock to a patient under HSL or SoL."""
    settings = settings_of(ctx)
    with connect(settings) as conn:
        row = service.assign(conn, server_secret(settings), device_id=device, patient=patient,
                             basis=basis, actor=actor(), prescribing_unit=prescribing_unit,
                             order=order, until=None if until is None else until.date(),
                             reason=reason)
    click.echo(dumps(row))


@device_group.command("history")
@click.argument("device")
@click.option("--by-owner", is_flag=True,
              help="One JSON line per principal that owned it, in order of ownership:"
                   " {\"principal\": CODE, \"history\": [...]}.")
@click.pass_context
def device_history(ctx: click.Context, device: str, by_owner: bool) -> None:
    """A device's life as JSON lines, oldest first."""
    with connect(settings_of(ctx)) as conn:
        if by_owner:
            parts = lifecycle.history_by_owner(conn, device)
            for principal, rows in parts.items():
                click.echo(dumps({"principal": principal, "history": rows}))
            return
        for row in service.history(conn, device):
            click.echo(dumps(row))
