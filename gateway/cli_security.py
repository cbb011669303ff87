"""``aidlink policy …``, ``aidlink broker-config`` and ``aidlink device revoke``: each
principal's security requirements, and the broker that enforces them."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import click

from adapters.model import dumps
from gateway.cli_common import actor, connect, fail, publish_command, settings_of
from gateway.cli_provisioning import device_group
from gateway.settings import Settings, ca_passphrase
from provisioning import broker_config, pki, policy, renewal, service

GATEWAY_PASSWORD_FILE = "gateway-mqtt.password"  # noqa: S105 - a file name, not a secret


@click.group("policy")
def policy_group() -> None:
    """Principals' security policies (versioned)."""


def _value(text: str) -> Any:
    """A --set value: JSON where it parses (numbers, lists, objects), else the plain text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@policy_group.command("set")
@click.argument("principal")
@click.option("--file", "source", type=click.File("r"), default=None,
              help="A whole policy document (JSON); - for stdin.")
@click.option("--set", "changes", multiple=True, metavar="FIELD=VALUE",
              help="Change one field of the current policy (repeatable).")
@click.pass_context
def policy_set(ctx: click.Context, principal: str, source: Any,
               changes: tuple[str, ...]) -> None:
    """Store a new version of a principal's policy."""
    with connect(settings_of(ctx)) as conn:
        if source is not None:
            try:
                document = json.load(source)
            except ValueError as exc:
                fail(f"policy file is not JSON: {exc}", 2)
        else:
            document = policy.current_policy(conn, principal).document()
        for change in changes:
            field, equals, value = change.partition("=")
            if not equals or not field:
                fail(f"--set {change!r} must look like FIELD=VALUE", 2)
            document[field] = _value(value)
        version = policy.set_policy(conn, principal, document, actor())
        conn.commit()
        current = policy.current_policy(conn, principal)
    click.echo(dumps({"principal": principal, "version": version,
                      "policy": current.document()}))


@policy_group.command("show")
@click.argument("principal")
@click.option("--history", is_flag=True, help="Every version, oldest first.")
@click.pass_context
def policy_show(ctx: click.Context, principal: str, history: bool) -> None:
    """The current policy (or its history) as JSON."""
    with connect(settings_of(ctx)) as conn:
        if history:
            for row in policy.policy_history(conn, principal):
                click.echo(dumps(row))
            return
        current = policy.current_policy(conn, principal)
    click.echo(dumps({"principal": principal, "version": current.version,
                      "policy": current.document()}))


@policy_group.command("check")
@click.option("--principal", default=None)
@click.pass_context
def policy_check(ctx: click.Context, principal: str | None) -> None:
    """Every device that no longer complies, and why; exit 1 when there is one."""
    with connect(settings_of(ctx)) as conn:
        rows = policy.fleet_check(conn, principal)
    for row in rows:
        click.echo(dumps(row))
    if rows:
        ctx.exit(1)


def gateway_password(settings: Settings) -> str:
    """The gateway's MQTT password: the setting, else one kept under the home (0600)."""
    if settings.mqtt_gateway_password is not None:
        return settings.mqtt_gateway_password.get_secret_value()
    path = settings.home / GATEWAY_PASSWORD_FILE
    if not path.exists():
        settings.home.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24))
    return path.read_text().strip()


@click.command("broker-config")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--listener-port", type=click.IntRange(1, 65535), default=8883, show_default=True,
              help="TLS listener requiring client certificates.")
@click.option("--password-port", type=click.IntRange(1, 65535), default=None,
              help="TLS listener for password devices and the gateway.")
@click.option("--plain-port", type=click.IntRange(1, 65535), default=None,
              help="Loopback listener without TLS for the gateway and local tools.")
@click.option("--server-name", "server_names", multiple=True, metavar="NAME",
              help="A host name or address devices use for the broker, put in its certificate"
                   " (repeat for several) [default: localhost and 127.0.0.1].")
@click.option("--refresh", is_flag=True, help="Only re-sign CRLs and passwords, then reload.")
@click.option("--pid", type=int, default=None,
              help="Mosquitto's pid, to send SIGHUP; default from the directory's pid file.")
@click.pass_context
def broker_config_cmd(ctx: click.Context, out: Path, listener_port: int,
                      password_port: int | None, plain_port: int | None,
                      server_names: tuple[str, ...], refresh: bool, pid: int | None) -> None:
    """Write the Mosquitto configuration: TLS, CA chain and CRLs, ACL and passwords."""
    settings = settings_of(ctx)
    with connect(settings) as conn:
        if refresh:
            result = broker_config.refresh_credentials(
                conn, ca_passphrase(settings), out,
                broker_pid=pid or broker_config.running_pid(out.absolute()))
        else:
            result = broker_config.write_broker_config(
                conn, ca_passphrase(settings), out, gateway_password=gateway_password(settings),
                listener_port=listener_port, password_port=password_port,
                plain_port=plain_port,
                server_names=server_names or broker_config.DEFAULT_SERVER_NAMES)
        conn.commit()
    click.echo(dumps(result))


@device_group.command("revoke")
@click.argument("device")
@click.option("--reason", type=click.Choice(pki.REASONS), required=True)
@click.option("--broker-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The broker-config directory to refresh (CRLs, passwords, ACL);"
                   " default AIDLINK_BROKER_DIR.")
@click.option("--pid", type=int, default=None,
              help="Mosquitto's pid, to send SIGHUP; default from the directory's pid file.")
@click.pass_context
def device_revoke(ctx: click.Context, device: str, reason: str, broker_dir: Path | None,
                  pid: int | None) -> None:
    """Revoke a device's certificates and password; the broker refuses it from now on,
    and a session it has open loses its rights at the broker's reload."""
    settings = settings_of(ctx)
    passphrase = ca_passphrase(settings)
    out = broker_dir or settings.broker_dir
    with connect(settings) as conn:
        result = pki.revoke(conn, passphrase, device, reason, actor())
        conn.commit()
        if out is not None:
            result["broker"] = broker_config.refresh_credentials(
                conn, passphrase, out, broker_pid=pid or broker_config.running_pid(out.absolute()))
            conn.commit()
    click.echo(dumps(result))


@device_group.command("renew")
@click.argument("device", required=False)
@click.option("--due", is_flag=True,
              help="Renew every certificate inside its renewal window; a refused one is listed"
                   " (with the rule that refused it) and the rest go on; exit status 1 when"
                   " any was refused.")
@click.option("--principal", default=None, help="With --due: this principal's only.")
@click.option("--csr", type=click.File("r"), default=None, help="The device's own CSR (PEM).")
@click.option("--new-key", is_flag=True,
              help="Generate a new key (printed once) instead of certifying the device's key.")
@click.option("--deliver", is_flag=True,
              help="Publish renewed certificates on the devices' down topics (QoS 1).")
@click.pass_context
def device_renew(ctx: click.Context, device: str | None, due: bool, principal: str | None,
                 csr: Any, new_key: bool, deliver: bool) -> None:
    """Renew a device's certificate before it expires (under the current policy), or all due.

    Without --csr or --new-key the device's current key is certified again, so the new
    certificate can be sent to the device over MQTT (--deliver) with nothing secret in it.
    With --due, each refusal prints a JSON line with "refused" (why), then each renewal one.
    """
    if (device is None) == (not due):
        fail("give a DEVICE or --due", 2)
    if csr is not None and new_key:
        fail("give --csr or --new-key, not both", 2)
    if due and csr is not None:
        fail("--csr certifies one device's key: give a DEVICE with it, not --due", 2)
    if due and new_key:
        # A new key must reach its device once, by hand; --due certifies the keys devices
        # hold, so their certificates can go out over MQTT.
        fail("--new-key makes one device's new key: give a DEVICE with it, not --due", 2)
    if principal is not None and not due:
        fail("--principal goes with --due only", 2)
    settings = settings_of(ctx)
    passphrase = ca_passphrase(settings)
    refused: list[dict[str, Any]] = []
    renewed: list[dict[str, Any]] = []
    with connect(settings) as conn:
        if device is not None:
            issued = pki.renew(conn, passphrase, device_id=device, actor=actor(),
                               csr_pem=None if csr is None else csr.read(),
                               keep_key=csr is None and not new_key)
            conn.commit()
            row: dict[str, Any] = {"device_id": device, "certificate_serial": issued.serial,
                                   "certificate_not_after": issued.not_after,
                                   "certificate_pem": issued.certificate_pem}
            if issued.private_key_pem is not None:
                row["private_key_pem"] = issued.private_key_pem
            click.echo(dumps(row))
        else:
            if principal is not None:
                service.get_principal(conn, principal)
            # The schedule's own renewal, model and firmware rules included; one device's
            # refusal does not hold up the rest.
            renewed, refused = renewal.renew_due(conn, passphrase, actor=actor(),
                                                 principal=principal)
            for failed in refused:
                click.echo(dumps({"device_id": failed["device_id"], "serial": failed["serial"],
                                  "refused": failed["reason"]}))
            for done in renewed:
                click.echo(dumps({"device_id": done["device_id"],
                                  "certificate_serial": done["serial"],
                                  "certificate_not_after": done["not_after"],
                                  "certificate_pem": done["certificate_pem"]}))
        if deliver:
            def publish(topic: str, payload: bytes) -> bool:
                return publish_command(settings, topic, payload, retain=True)

            for sent in renewal.deliver(conn, publish, actor=actor()):
                click.echo(dumps(sent))
    if refused:
        fail(f"{len(refused)} of {len(refused) + len(renewed)} due certificate(s) refused"
             " renewal (listed above)")
