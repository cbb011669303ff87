"""``aidlink gateway``: the ingest pipeline alone, for deployments that run it as its own
process (several of them on one shared subscription when one is not enough)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import click

from gateway import heap
from gateway.cli_common import fail, settings_of
from gateway.fleet_metrics import FleetMetrics
from gateway.health_server import HealthServer
from gateway.ingest.pipeline import Gateway, GatewayConfig
from gateway.ingest.topics import SUBSCRIPTION
from gateway.logs import configure_logging
from gateway.settings import ConfigurationError, database_url, mqtt_url

log = logging.getLogger("aidlink.gateway")


def shared(group: str | None) -> str:
    """The subscription: plain, or an MQTT 5 shared subscription of ``group`` (each message
    goes to one member of the group; MQTT 5 §4.8.2)."""
    if group is None:
        return SUBSCRIPTION
    if not group or any(c in group for c in "/+#"):
        raise click.BadParameter(f"share group {group!r} must be a non-empty name without"
                                 " '/', '+' or '#'", param_hint="--share")
    return f"$share/{group}/{SUBSCRIPTION}"


@click.command("gateway")
@click.option("--share", "group", default=None,
              help="Join the shared subscription GROUP: run several gateways, each message is"
                   " stored by one of them.")
@click.option("--client-id", default=None,
              help="MQTT client id (unique per process) [default: AIDLINK_GATEWAY_CLIENT_ID].")
@click.option("--health-port", type=click.IntRange(1, 65535), default=None,
              help="Serve /healthz (200 ok, 503 degraded with reasons) and /metrics on this"
                   " port.")
@click.option("--health-host", default="127.0.0.1", show_default=True,
              help="Address for --health-port (0.0.0.0 in a container).")
@click.pass_context
def gateway_cmd(ctx: click.Context, group: str | None, client_id: str | None,
                health_port: int | None, health_host: str) -> None:
    """Run the ingest pipeline on the configured database and broker until SIGTERM/SIGINT."""
    settings = settings_of(ctx)
    configure_logging(settings.log_format)
    try:
        config = GatewayConfig(
            database_url=database_url(settings), mqtt_url=mqtt_url(settings),
            client_id=client_id or settings.gateway_client_id, protocol=settings.mqtt_protocol,
            batch_max_rows=settings.batch_max_rows,
            batch_max_delay=settings.batch_max_delay_ms / 1000,
            receive_maximum=settings.receive_maximum, subscription=shared(group),
            writers=settings.writers)
    except ConfigurationError as exc:
        fail(str(exc))
    if group is not None and config.protocol != 5:
        fail("--share needs MQTT 5 (AIDLINK_MQTT_PROTOCOL=5)", 2)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    gateway = Gateway(config)
    health = None
    if health_port is not None:
        try:
            # The fleet gauges come from the database, which this process knows: a
            # deployment without the API still gets them.
            fleet = FleetMetrics(database_url=config.database_url)
            health = HealthServer(gateway.health, host=health_host, port=health_port,
                                  metrics=fleet.exposition)
        except OSError as exc:
            fail(str(exc))
    gateway.start()
    if health is not None:
        health.start()
        log.info("health on http://%s:%d/healthz and /metrics", health_host, health.port)
    if not gateway.wait_connected(10):
        log.warning("not connected to the broker yet; retrying in the background")
    log.info("gateway %s running (subscription %s)", config.client_id, config.subscription)
    heap.collect_less_often()
    heap.settle()
    stop.wait()
    gateway.stop()
    if health is not None:
        health.stop()
    log.info("gateway %s stopped", config.client_id)
