"""``aidlink up``: the whole system on one machine, on embedded defaults where none is set."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import click
import psycopg
import uvicorn

from gateway import db, demo, demo_week, heap
from gateway.api.app import create_app
from gateway.auth import MAX_TOKEN_TTL_SECONDS, Role, issue_token
from gateway.dc09_thread import Dc09Receiver
from gateway.housekeeping_thread import (
    CredentialsRefresh,
    Housekeeping,
    credentials_interval_error,
)
from gateway.ingest.pipeline import Gateway, GatewayConfig
from gateway.logs import configure_logging
from gateway.renewal_thread import RenewalLoop
from gateway.settings import (
    RUNTIME_FILE,
    Settings,
    ca_passphrase,
    load_settings,
    server_secret,
)
from gateway.settings import database_url as configured_database_url
from gateway.token_keys import KeyRing

log = logging.getLogger("aidlink.up")


class _ApiServer(uvicorn.Server):
    """uvicorn, minus its habit of re-raising the stop signal after shutting down.

    Re-raising SIGTERM would kill the process before ``aidlink up`` stops the gateway,
    the broker and the database in order.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def _say(message: str) -> None:
    click.echo(message, err=True)


def _database(settings: Settings, stack: ExitStack) -> str:
    if settings.database_url:
        return settings.database_url
    from gateway.services.embedded import start_embedded_postgres

    _say(f"starting embedded PostgreSQL under {settings.home / 'pgdata'}")
    url, stop = start_embedded_postgres(settings.home)
    stack.callback(stop)
    return url


def _broker(settings: Settings, stack: ExitStack, port: int, kind: str) -> tuple[str, int]:
    """The broker URL and the MQTT protocol the gateway should speak to it."""
    if settings.mqtt_url:
        return settings.mqtt_url, settings.mqtt_protocol
    from gateway.services.mosquitto import MosquittoProcess, find_mosquitto

    if kind == "mosquitto" or (kind == "auto" and find_mosquitto() is not None):
        broker = MosquittoProcess(data_dir=settings.home / "mosquitto", port=port)
        broker.start()
        stack.callback(broker.stop)
        _say(f"started Mosquitto on 127.0.0.1:{broker.port}")
        return broker.url, settings.mqtt_protocol
    from gateway.services.embedded import start_inprocess_broker

    stop = start_inprocess_broker(port)
    stack.callback(stop)
    _say(f"started the in-process MQTT 3.1.1 broker on port {port}")
    return f"mqtt://127.0.0.1:{port}", 4


def _check_free(port: int, what: str, flag: str) -> None:
    """Refuse a port that something else already listens on, naming it and the way out."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise click.ClickException(
                f"port {port} for the {what} is already in use on 127.0.0.1; "
                f"choose another with {flag}")


def _write_runtime(home: Path, **info: str | int) -> Callable[[], None]:
    path = home / RUNTIME_FILE
    path.write_text(json.dumps({"pid": os.getpid(), **info}))
    return lambda: path.unlink(missing_ok=True)


@click.command("up")
@click.option("--demo", "with_demo", is_flag=True, help="Seed Dalarna and run a simulated fleet.")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Data directory for the embedded database and broker.")
@click.option("--mqtt-port", type=click.IntRange(1, 65535), default=None)
@click.option("--api-port", type=click.IntRange(1, 65535), default=None)
@click.option("--dc09-port", type=click.IntRange(0, 65535), default=None,
              help="SIA DC-09 receiver port (0 turns it off).")
@click.option("--demo-interval", type=click.FloatRange(0.1), default=10.0, show_default=True,
              help="Seconds between a demo cuff's readings.")
@click.option("--broker", "broker_kind", type=click.Choice(["auto", "mosquitto", "inprocess"]),
              default="auto", show_default=True,
              help="Embedded broker: Mosquitto when installed (auto), or the in-process one.")
@click.pass_context
def up_cmd(ctx: click.Context, with_demo: bool, home: Path | None, mqtt_port: int | None,
           api_port: int | None, dc09_port: int | None, demo_interval: float,
           broker_kind: str) -> None:
    """Run database, broker, gateway and API on this machine; Ctrl-C stops everything."""
    parent: Settings = ctx.ensure_object(dict)["settings"]
    settings = load_settings(home=home or parent.home, mqtt_port=mqtt_port, api_port=api_port,
                             dc09_port=dc09_port)
    configure_logging(settings.log_format)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    settings.home.mkdir(parents=True, exist_ok=True)
    settings = settings.model_copy(update={"home": settings.home.resolve()})
    if not settings.mqtt_url:
        _check_free(settings.mqtt_port, "embedded MQTT broker", "--mqtt-port")
    _check_free(settings.api_port, "API", "--api-port")
    if settings.dc09_port:
        _check_free(settings.dc09_port, "DC-09 receiver", "--dc09-port")
    too_long = credentials_interval_error(settings.credentials_interval_s,
                                          "AIDLINK_CREDENTIALS_INTERVAL_S")
    if too_long:
        raise click.ClickException(too_long)
    secret = server_secret(settings)
    stop = threading.Event()
    with ExitStack() as stack:
        try:
            database_url = _database(settings, stack)
            broker_url, protocol = _broker(settings, stack, settings.mqtt_port, broker_kind)
            db.migrate(database_url)
        except (OSError, RuntimeError, psycopg.Error, db.MigrationError) as exc:
            _say(f"aidlink up: {exc}")
            sys.exit(1)
        hubs: list[demo.DemoHub] = []
        if with_demo:
            with psycopg.connect(database_url) as conn:
                hubs = demo.seed(conn, secret, settings.home)
        gateway = Gateway(GatewayConfig(
            database_url=database_url, mqtt_url=broker_url, client_id=settings.gateway_client_id,
            protocol=protocol, batch_max_rows=settings.batch_max_rows,
            batch_max_delay=settings.batch_max_delay_ms / 1000,
            receive_maximum=settings.receive_maximum, writers=settings.writers))
        gateway.start()
        stack.callback(gateway.stop)
        # The API's startup freezes the heap (gateway/heap.py); the gateway's share of this
        # process needs the rarer collections too.
        heap.collect_less_often()
        if not gateway.wait_connected(10):
            _say("aidlink up: the gateway could not connect to the broker")
            sys.exit(1)
        if settings.renew_interval_s:
            # With the broker directory, a confirmed wipe shuts the device out at once
            # instead of at the next credentials refresh.
            renewer = RenewalLoop(database_url, broker_url, ca_passphrase(settings),
                                  interval_s=settings.renew_interval_s, protocol=protocol,
                                  downlink_interval_s=settings.downlink_interval_s,
                                  broker_dir=settings.broker_dir)
            renewer.start()
            stack.callback(renewer.stop)
        if settings.housekeeping_interval_s:
            housekeeping = Housekeeping(database_url,
                                        interval_s=settings.housekeeping_interval_s)
            housekeeping.start()
            stack.callback(housekeeping.stop)
        if settings.broker_dir is not None and settings.credentials_interval_s:
            # The CRLs there expire after a week; nothing else re-signs them on a schedule.
            refresher = CredentialsRefresh(database_url, ca_passphrase(settings),
                                           settings.broker_dir,
                                           interval_s=settings.credentials_interval_s)
            refresher.start()
            stack.callback(refresher.stop)
        if settings.dc09_port:
            receiver = Dc09Receiver(gateway, database_url, host="127.0.0.1",
                                    port=settings.dc09_port)
            receiver.start()
            stack.callback(receiver.stop)
            _say(f"SIA DC-09 receiver on 127.0.0.1:{receiver.port}")
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        stack.callback(_write_runtime(settings.home, database_url=database_url,
                                      mqtt_url=broker_url, api_url=api_url))
        if hubs:
            demo.run(hubs, broker_url, protocol, stop, interval=demo_interval)
            stack.callback(stop.set)
            _every_class_week(settings, database_url, secret, broker_url, protocol)
            _print_demo(secret, settings, api_url, broker_url, hubs)
        app = create_app(database_url=database_url, secret=secret,
                         gateway_health=gateway.health, ca_passphrase=ca_passphrase(settings),
                         broker_dir=settings.broker_dir,
                         token_ttl_seconds=settings.token_ttl_seconds)
        # In JSON, uvicorn's own loggers go through the root handler like every other;
        # in text, they keep uvicorn's usual look.
        log_config = None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG
        server = _ApiServer(uvicorn.Config(app, host=settings.api_host,
                                           port=settings.api_port, log_level="warning",
                                           log_config=log_config))
        _say(f"aidlink is up: API {api_url}, broker {broker_url}. Ctrl-C stops it.")
        server.run()
        _say("stopping aidlink")


def _every_class_week(settings: Settings, database_url: str, secret: bytes, broker_url: str,
                      protocol: int) -> None:
    """On the first demo start: one device of every class and a simulated week of data."""
    marker = settings.home / "demo-week.json"
    if marker.exists():
        return
    with psycopg.connect(database_url) as conn:
        ids = demo_week.register(conn, secret)
    marker.write_text(json.dumps(ids))
    receiver = ("127.0.0.1", settings.dc09_port) if settings.dc09_port else None
    demo_week.replay_week(ids, broker_url, protocol, receiver)
    _say("replaying a simulated week of every device class (patients demo-astrid, "
         "demo-bertil, demo-social-alarm, …)")


def _print_demo(secret: bytes, settings: Settings, api_url: str, broker_url: str,
                hubs: list[demo.DemoHub]) -> None:
    first = hubs[0]
    # runtime.json, written before this, names the database even when it is the embedded one.
    db_url = configured_database_url(settings)
    ring = KeyRing(lambda: psycopg.connect(db_url), secret)
    token = issue_token(ring.current(), principal=first.principal, role=Role.CLINICIAN,
                        subject="demo-clinician",
                        ttl_seconds=min(settings.token_ttl_seconds, MAX_TOKEN_TTL_SECONDS))
    patient = first.cuffs[0][1]
    url = f"{api_url}/fhir/r4/Observation?subject=Patient/{patient}&_count=5"
    click.echo(f"""
aidlink demo
  API:     {api_url}
  broker:  {broker_url}
  fleet:   {sum(len(h.cuffs) for h in hubs)} blood pressure monitors behind {len(hubs)} hubs
  token (clinician, principal {first.principal}):
{token}

Try:
  curl -s -H "Authorization: Bearer {token}" '{url}'
""")
