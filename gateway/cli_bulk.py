"""``aidlink device bulk FILE --out DIR``: onboard a delivery of devices from one CSV."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from adapters.model import dumps
from gateway.cli_common import actor, connect, fail, settings_of, sync_broker
from gateway.cli_provisioning import _write_private
from gateway.settings import ca_passphrase, device_broker_url
from provisioning import bulk

_FILES = (("certificate_pem", "certificate.pem"), ("ca_chain_pem", "ca-chain.pem"),
          ("private_key_pem", "device.key"))


class _Counter:
    """Progress on a stderr that is not a terminal: a line every tenth, not a bar redrawn."""

    def __init__(self) -> None:
        self._shown = -1

    def __call__(self, done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth != self._shown or done == total:
            self._shown = tenth
            click.echo(f"aidlink: onboarded {done}/{total}", err=True)


def _write_bundle(out: Path, row: dict[str, Any]) -> None:
    """One device's bundle, each file readable by its owner only (they hold secrets)."""
    folder = out / row["device_id"]
    _write_private(folder / "bundle.json", dumps(row) + "\n")
    for field, name in _FILES:
        if field in row:
            _write_private(folder / name, row[field])


@click.command("bulk")
@click.argument("source", metavar="FILE|-", type=click.File("r", encoding="utf-8-sig"))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Write a bundle per device into DIR/<device_id>/, and DIR/summary.json.")
@click.option("--no-progress", is_flag=True, help="Show no progress on stderr.")
@click.pass_context
def device_bulk(ctx: click.Context, source: Any, out: Path, no_progress: bool) -> None:
    """Onboard every device of a CSV (principal, model, serial, …); refused rows are listed."""
    settings = settings_of(ctx)
    text = source.read()
    try:
        # Made before onboarding: server-generated keys exist only in memory until written.
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"--out {out}: {exc}")
    with connect(settings) as conn:
        # Inside, so a wrong AIDLINK_DEVICE_BROKER_URL fails naming it; None (no broker known
        # here) leaves the bundles without an address.
        broker_url = device_broker_url(settings)
        passphrase = ca_passphrase(settings)
        if no_progress:
            result = bulk.onboard_csv(conn, passphrase, text, actor=actor(),
                                      broker_url=broker_url)
        elif sys.stderr.isatty():
            with click.progressbar(length=max(text.count("\n") - 1, 1), file=sys.stderr,
                                   label="onboarding") as bar:
                def advance(done: int, total: int) -> None:
                    bar.length = total
                    bar.update(done - bar.pos)

                result = bulk.onboard_csv(conn, passphrase, text, actor=actor(),
                                          progress=advance, broker_url=broker_url)
        else:
            result = bulk.onboard_csv(conn, passphrase, text, actor=actor(),
                                      progress=_Counter(), broker_url=broker_url)
        if any("mqtt_password" in row for row in result.onboarded):
            # Password devices connect only once the broker's password file holds them.
            sync_broker(conn, settings)
    # The devices are committed by now; their keys exist only in memory until written here.
    try:
        for row in result.onboarded:
            _write_bundle(out, row)
        summary = result.counts() | {"out": str(out), "refused_rows": result.refused,
                                     "devices": [{"serial": row["serial"],
                                                  "device_id": row["device_id"]}
                                                 for row in result.onboarded]}
        _write_private(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    except OSError as exc:
        fail(f"writing bundles to {out}: {exc}")
    for refusal in result.refused:
        click.echo(f"aidlink: refused: {refusal['reason']}", err=True)
    click.echo(json.dumps({"onboarded": len(result.onboarded), "refused": len(result.refused),
                           "out": str(out)}))
    if result.refused:
        sys.exit(1)
