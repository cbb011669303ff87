"""``aidlink housekeeping``: what keeps a deployment's credentials and data fresh, as a
process of its own beside ``aidlink gateway`` (``aidlink up`` runs the same schedules).

Three schedules, each run once at start and then every interval:
- the downlink over MQTT (``RenewalLoop``): certificate renewal and delivery, and on an
  interval of its own (seconds) wipe commands, with a broker refresh after a confirmed
  wipe when there is a broker directory;
- data retention and the daily aggregates (``Housekeeping``);
- with a broker directory, the broker's credentials (``CredentialsRefresh``): CRLs
  re-signed well before they lapse, passwords and ACL rewritten, the broker reloaded.

``--once`` runs one round of each in turn (the downlink's: wipes, then renewal) and exits,
for cron and for checks.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click
import psycopg

from adapters.model import dumps
from gateway.cli_common import fail, settings_of
from gateway.housekeeping_thread import (
    CredentialsRefresh,
    Housekeeping,
    credentials_interval_error,
    data_round,
    log_credentials_round,
    log_data_round,
    refresh_broker,
)
from gateway.logs import configure_logging
from gateway.mqtt import MqttUrlError, parse_mqtt_url, protocol_of
from gateway.renewal_thread import RenewalLoop
from gateway.settings import (
    ConfigurationError,
    Settings,
    ca_passphrase,
    database_url,
    mqtt_url,
)
from provisioning import broker_config
from provisioning.ca import PassphraseError as CaPassphraseError
from provisioning.ca import authority, now_or
from provisioning.errors import ProvisioningError

log = logging.getLogger("aidlink.housekeeping")


class _Plan:
    """What this run does, with every setting it needs checked before anything starts."""

    def __init__(self, settings: Settings, *, renew_s: int, downlink_s: int, data_s: int,
                 credentials_s: int, broker_dir: Path | None) -> None:
        try:
            self.database_url = database_url(settings)
        except ConfigurationError as exc:
            fail(str(exc))
        self.renew_s, self.downlink_s, self.data_s = renew_s, downlink_s, data_s
        self.broker_dir = broker_dir if credentials_s else None
        self.credentials_s = credentials_s if broker_dir is not None else 0
        # Refreshed by the downlink after a confirmed wipe, whatever the credentials interval:
        # that refresh is what shuts the wiped device out.
        self.sync_dir = broker_dir if renew_s else None
        self.mqtt_url = ""
        self.protocol = settings.mqtt_protocol
        if renew_s:
            try:
                self.mqtt_url = mqtt_url(settings)
            except ConfigurationError as exc:
                fail(f"certificate delivery: {exc}")
            try:
                parse_mqtt_url(self.mqtt_url)
            except MqttUrlError:
                # Not the value itself: it may hold the gateway's password.
                fail("AIDLINK_MQTT_URL must look like mqtt://[user:password@]host[:port]")
            try:
                protocol_of(settings.mqtt_protocol)
            except MqttUrlError as exc:
                fail(f"AIDLINK_MQTT_PROTOCOL: {exc}")
        self.passphrase = b""
        if renew_s or self.credentials_s:
            try:
                self.passphrase = ca_passphrase(settings)
            except ConfigurationError as exc:
                fail(str(exc))
        used = self.broker_dir or self.sync_dir
        if used is not None and not (used / broker_config.PASSWORDS).is_file():
            fail(f"broker directory {used} (AIDLINK_BROKER_DIR or --broker-dir)"
                 " holds no broker configuration: run `aidlink broker-config --out"
                 f" {used}` first")

    def check_database(self) -> None:
        """Reach the database and, when the CA keys are needed, open the root CA's."""
        try:
            with psycopg.connect(self.database_url, connect_timeout=5) as conn:
                conn.execute("SELECT 1 FROM certificate_authorities LIMIT 1")
                if self.passphrase:
                    # A wrong passphrase would fail every round; say so now instead. On a
                    # database without CAs this makes the root, as the first round would.
                    authority(conn, self.passphrase, None, now_or(None))
                conn.commit()
        except psycopg.errors.UndefinedTable as exc:
            fail(f"database has no aidlink schema ({exc.diag.message_primary}); "
                 "run `aidlink db migrate`")
        except psycopg.OperationalError as exc:
            fail(f"database (AIDLINK_DATABASE_URL): {str(exc).strip().splitlines()[0]}")
        except CaPassphraseError as exc:
            fail(f"AIDLINK_CA_PASSPHRASE: {exc}")


def _downlink(plan: _Plan, client_id: str) -> RenewalLoop:
    return RenewalLoop(plan.database_url, plan.mqtt_url, plan.passphrase,
                       interval_s=plan.renew_s, protocol=plan.protocol, client_id=client_id,
                       downlink_interval_s=plan.downlink_s, broker_dir=plan.sync_dir)


def _downlink_round(plan: _Plan, client_id: str) -> dict[str, Any]:
    """One full downlink round (wipes, then renewal): the summaries of both."""
    loop = _downlink(plan, client_id)
    try:
        done = loop.run_full_round()
    finally:
        loop.stop()
    result = done["renewal"]
    delivered = [d for d in result["delivered"] if d["published"]]
    summary = {"renewed": [r["device_id"] for r in result["renewed"]],
               "refused": result["refused"], "delivered": len(delivered),
               "undelivered": len(result["delivered"]) - len(delivered)}
    log.info("certificates renewed %d, refused %d, delivered %d, not delivered %d",
             len(summary["renewed"]), len(summary["refused"]), summary["delivered"],
             summary["undelivered"])
    for refused in result["refused"]:
        log.warning("certificate of device %s not renewed: %s", refused["device_id"],
                    refused["reason"], extra={"device": refused["device_id"]})
    wipes: list[dict[str, Any]] = done["wipes"]
    if wipes:
        log.info("wipe commands published or removed %d of %d",
                 sum(1 for w in wipes if w["published"]), len(wipes))
    return {"renewal": summary, "wipes": wipes, "broker": done["broker"]}


def _once(plan: _Plan, client_id: str) -> None:
    """One round of each enabled part; every part runs even when an earlier one failed."""
    report: dict[str, Any] = {"renewal": None, "wipes": None, "data": None,
                              "credentials": None}
    failures: list[str] = []
    if plan.renew_s:
        try:
            done = _downlink_round(plan, f"{client_id}-once")
        except (psycopg.Error, OSError, ProvisioningError) as exc:
            failures.append(f"downlink (wipes and certificate renewal) failed: {exc}")
        else:
            report["renewal"], report["wipes"] = done["renewal"], done["wipes"]
            if report["renewal"]["undelivered"]:
                failures.append(f"certificate delivery: {report['renewal']['undelivered']}"
                                " renewed certificates not accepted by the broker (sent"
                                " again next round)")
            unsent = sum(1 for w in done["wipes"] if not w["published"])
            if unsent:
                failures.append(f"wipe delivery: {unsent} wipe commands (or their removals)"
                                " not accepted by the broker (sent again next round)")
            if done["broker"] is not None and "error" in done["broker"]:
                failures.append(f"broker refresh of {plan.sync_dir} after a confirmed wipe"
                                f" failed: {done['broker']['error']}")
    if plan.data_s:
        try:
            report["data"] = data_round(plan.database_url)
        except (psycopg.Error, OSError) as exc:
            failures.append(f"data housekeeping failed: {exc}")
        else:
            log_data_round(report["data"])
            if "error" in report["data"]["retention"]:
                failures.append(f"retention failed: {report['data']['retention']['error']}")
    if plan.broker_dir is not None:
        try:
            report["credentials"] = refresh_broker(plan.database_url, plan.passphrase,
                                                   plan.broker_dir)
        except (psycopg.Error, OSError, ProvisioningError) as exc:
            failures.append(f"broker credentials refresh of {plan.broker_dir} failed: {exc}")
        else:
            log_credentials_round(report["credentials"])
    click.echo(dumps(report))
    if failures:
        for failure in failures[:-1]:
            click.echo(f"aidlink: {failure}", err=True)
        fail(failures[-1])


def _serve(plan: _Plan, client_id: str) -> None:
    """Every enabled schedule until SIGTERM or SIGINT."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    running: list[RenewalLoop | Housekeeping | CredentialsRefresh] = []
    if plan.renew_s:
        running.append(_downlink(plan, client_id))
    if plan.data_s:
        running.append(Housekeeping(plan.database_url, interval_s=plan.data_s))
    if plan.broker_dir is not None:
        running.append(CredentialsRefresh(plan.database_url, plan.passphrase, plan.broker_dir,
                                          interval_s=plan.credentials_s))
    for schedule in running:
        schedule.start()
    log.info("housekeeping running: certificate renewal %s, wipes %s, data %s, broker"
             " credentials %s", _every(plan.renew_s),
             _every(plan.downlink_s) if plan.renew_s and plan.downlink_s
             else f"with renewal ({_every(plan.renew_s)})", _every(plan.data_s),
             f"of {plan.broker_dir} {_every(plan.credentials_s)}" if plan.broker_dir
             else "off (no broker directory)")
    stop.wait()
    for schedule in reversed(running):
        schedule.stop()
    log.info("housekeeping stopped")


def _every(seconds: int) -> str:
    return f"every {seconds} s" if seconds else "off"


@click.command("housekeeping")
@click.option("--once", is_flag=True,
              help="One round of each part, then exit (1 if one failed): for cron.")
@click.option("--renew-interval", type=click.IntRange(0), default=None, metavar="SECONDS",
              help="Seconds between certificate renewal rounds; 0 turns renewal and wipe"
                   " delivery off [default: AIDLINK_RENEW_INTERVAL_S, 3600].")
@click.option("--downlink-interval", type=click.IntRange(0), default=None, metavar="SECONDS",
              help="Seconds between wipe rounds (pending wipe commands out, confirmed ones"
                   " removed, then the broker directory refreshed); 0: wipes go with the"
                   " renewal rounds only [default: AIDLINK_DOWNLINK_INTERVAL_S, 30].")
@click.option("--data-interval", type=click.IntRange(0), default=None, metavar="SECONDS",
              help="Seconds between retention and daily-aggregate rounds; 0 turns them off"
                   " [default: AIDLINK_HOUSEKEEPING_INTERVAL_S, 86400].")
@click.option("--credentials-interval", type=click.IntRange(0), default=None, metavar="SECONDS",
              help="Seconds between refreshes of the broker directory (CRLs, passwords, ACL,"
                   " reload); 0 turns them off. At most half the CRLs' 7 days"
                   " [default: AIDLINK_CREDENTIALS_INTERVAL_S, 21600].")
@click.option("--broker-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The `aidlink broker-config --out` directory to refresh"
                   " [default: AIDLINK_BROKER_DIR; without one, no refresh].")
@click.option("--client-id", default="aidlink-renewal", show_default=True,
              help="MQTT client id for certificate delivery (--once adds -once).")
@click.pass_context
def housekeeping_cmd(ctx: click.Context, once: bool, renew_interval: int | None,
                     downlink_interval: int | None, data_interval: int | None,
                     credentials_interval: int | None, broker_dir: Path | None,
                     client_id: str) -> None:
    """Renew and deliver certificates, deliver wipe commands, apply retention and refresh the
    daily aggregates, and re-sign the broker's CRLs, until SIGTERM/SIGINT (or once, with
    --once)."""
    settings = settings_of(ctx)
    if credentials_interval is None:
        credentials_s, named = settings.credentials_interval_s, "AIDLINK_CREDENTIALS_INTERVAL_S"
    else:
        credentials_s, named = credentials_interval, "--credentials-interval"
    too_long = credentials_interval_error(credentials_s, named)
    if too_long:
        fail(too_long, 2)
    plan = _Plan(settings,
                 renew_s=settings.renew_interval_s if renew_interval is None else renew_interval,
                 downlink_s=(settings.downlink_interval_s if downlink_interval is None
                             else downlink_interval),
                 data_s=(settings.housekeeping_interval_s if data_interval is None
                         else data_interval),
                 credentials_s=credentials_s,
                 broker_dir=broker_dir or settings.broker_dir)
    if not (plan.renew_s or plan.data_s or plan.broker_dir):
        fail("nothing to do: renewal and data housekeeping are off (interval 0) and there is"
             " no broker directory to refresh (AIDLINK_BROKER_DIR)", 2)
    plan.check_database()
    configure_logging(settings.log_format)
    if once:
        _once(plan, client_id)
    else:
        _serve(plan, client_id)
