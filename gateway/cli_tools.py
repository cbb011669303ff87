"""``aidlink bench …`` and ``aidlink simulate``: measurements and simulated devices."""

from __future__ import annotations

import threading
from pathlib import Path

import click

from adapters.model import dumps
from gateway.cli_common import fail, settings_of
from gateway.mqtt import MqttUrlError
from gateway.settings import ConfigurationError, mqtt_url


@click.group("bench")
def bench_group() -> None:
    """Benchmarks; each writes its figures to a file."""


@bench_group.command("decode")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench-results/decode.json"), show_default=True)
@click.option("--seconds", type=click.FloatRange(0.05, 60), default=2.0, show_default=True,
              help="Time spent on each adapter.")
def bench_decode(out: Path, seconds: float) -> None:
    """Payloads per second per adapter on one core."""
    from gateway.bench import run_decode_bench

    out.parent.mkdir(parents=True, exist_ok=True)
    rates = run_decode_bench(out, seconds_per_adapter=seconds)
    for channel, rate in sorted(rates.items()):
        click.echo(f"{channel:12} {rate:>12,.0f} payloads/s")
    click.echo(f"written to {out}")


@bench_group.command("alarm")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench-results/alarm.json"), show_default=True)
@click.option("--count", type=click.IntRange(10, 100_000), default=200, show_default=True)
def bench_alarm(out: Path, count: int) -> None:
    """SCAIP alarm to stored and answered, on throwaway PostgreSQL and Mosquitto."""
    from gateway.bench_alarm import run_alarm_bench

    out.parent.mkdir(parents=True, exist_ok=True)
    figures = run_alarm_bench(out, count=count)
    click.echo(dumps(figures))
    click.echo(f"written to {out}")


@bench_group.command("provision")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench-results/provision.json"), show_default=True)
@click.option("--count", type=click.IntRange(10, 100_000), default=500, show_default=True)
@click.option("--bulk-count", type=click.IntRange(0, 100_000), default=10_000,
              show_default=True, help="Devices onboarded in bulk afterwards (0: none).")
def bench_provision(out: Path, count: int, bulk_count: int) -> None:
    """EC P-256 device certificates from CSRs (ms each, per second) and bulk onboarding, on a
    throwaway durable PostgreSQL, each against its target."""
    from gateway.bench_provision import run_provision_bench

    out.parent.mkdir(parents=True, exist_ok=True)
    click.echo(dumps(run_provision_bench(out, count=count, bulk_count=bulk_count)))
    click.echo(f"written to {out}")


@bench_group.command("bulk")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench-results/bulk.json"), show_default=True)
@click.option("--count", type=click.IntRange(10, 100_000), default=10_000, show_default=True)
@click.option("--password-count", type=click.IntRange(0, 100_000), default=0,
              show_default=True, help="Devices of a password principal as well.")
def bench_bulk(out: Path, count: int, password_count: int) -> None:
    """Bulk onboarding from CSV on a throwaway durable PostgreSQL."""
    from gateway.bench_bulk import run_bulk_bench

    out.parent.mkdir(parents=True, exist_ok=True)
    click.echo(dumps(run_bulk_bench(out, count=count, password_count=password_count)))
    click.echo(f"written to {out}")


@bench_group.command("api")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench-results/api.json"), show_default=True)
@click.option("--observations", type=click.IntRange(1000), default=10_000_000,
              show_default=True, help="Observations in the store before measuring.")
@click.option("--patients", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--days", type=click.IntRange(31, 3650), default=100, show_default=True,
              help="Days of history the observations spread over.")
@click.option("--requests", type=click.IntRange(10), default=1000, show_default=True,
              help="Measured requests per window (24 h and 30 days).")
@click.option("--ingest-rate", type=click.FloatRange(1), default=5000.0, show_default=True,
              help="Blood-pressure readings per second published while measuring.")
@click.pass_context
def bench_api(ctx: click.Context, out: Path, observations: int, patients: int, days: int,
              requests: int, ingest_rate: float) -> None:
    """FHIR reads over a large store under live ingestion (AIDLINK_DATABASE_URL: an empty
    database to use instead of a throwaway PostgreSQL)."""
    from gateway.bench_api import run_api_bench, table

    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        figures = run_api_bench(out, observations=observations, patients=patients, days=days,
                                requests=requests, ingest_rate=ingest_rate,
                                database_url=settings_of(ctx).database_url)
    except ValueError as exc:
        fail(f"bench api: {exc}")
    click.echo(table(figures))
    click.echo(f"written to {out}")


@bench_group.command("ingest")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench-results/ingest.json"), show_default=True,
              help="Figures as JSON; the plot goes next to it as .png.")
@click.option("--devices", type=click.IntRange(2, 10_000), default=1000, show_default=True)
@click.option("--seconds-ceiling", type=click.FloatRange(1, 600), default=20.0,
              show_default=True, help="Measured seconds publisher -> broker -> subscriber.")
@click.option("--seconds-throughput", type=click.FloatRange(1, 600), default=30.0,
              show_default=True, help="Measured seconds publisher -> gateway -> PostgreSQL.")
@click.option("--latency-rate", type=click.FloatRange(1, 100_000), default=5000.0,
              show_default=True, help="Readings per second of the latency phase.")
@click.option("--seconds-latency", type=click.FloatRange(1, 600), default=30.0,
              show_default=True)
@click.option("--publishers", type=click.IntRange(1, 8), default=2, show_default=True,
              help="Publisher processes sharing the devices.")
@click.option("--gateways", type=click.IntRange(1, 8), default=1, show_default=True,
              help="Gateway processes on one shared subscription (the ceiling then uses as"
                   " many subscribers, shared the same way).")
@click.option("--smoke", is_flag=True,
              help="A tiny run (20 devices, 2 s phases at 200/s) to check the bench works.")
def bench_ingest(out: Path, devices: int, seconds_ceiling: float, seconds_throughput: float,
                 latency_rate: float, seconds_latency: float, publishers: int,
                 gateways: int, smoke: bool) -> None:
    """QoS 1 ingest end to end on throwaway Mosquitto and durable PostgreSQL: broker ceiling,
    gateway throughput, latency at a fixed rate, gateway memory (batching settings from the
    AIDLINK_* environment)."""
    from gateway.bench_ingest import run_ingest_bench
    from gateway.bench_ingest_plot import table

    if smoke:
        devices, seconds_ceiling, seconds_throughput = 20, 2.0, 2.0
        latency_rate, seconds_latency = 200.0, 2.0
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        figures = run_ingest_bench(out, devices=devices, seconds_ceiling=seconds_ceiling,
                                   seconds_throughput=seconds_throughput,
                                   latency_rate=latency_rate, seconds_latency=seconds_latency,
                                   publishers=publishers, gateways=gateways)
    except ValueError as exc:
        fail(f"bench ingest: {exc}")
    click.echo(table(figures))
    click.echo(f"written to {out} and {out.with_suffix('.png')}")


@click.command("simulate")
@click.option("--scenario", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="Run a scenario file (see simulators/scenarios/).")
@click.option("--id", "ids", multiple=True, metavar="NAME=DEVICE",
              help="Fill a ${NAME} placeholder of the scenario with a registered id.")
@click.option("--dc09", default=None, metavar="HOST:PORT",
              help="DC-09 receiver for the scenario's alarm units.")
@click.option("--hub", "hub_id", default=None, help="The hub's client id (without --scenario).")
@click.option("--device", "devices", multiple=True, help="Peripheral ids (default: the hub).")
@click.option("--count", type=click.IntRange(0), default=1, show_default=True,
              help="Rounds to publish (0 = until interrupted).")
@click.option("--interval", type=click.FloatRange(0), default=5.0, show_default=True)
@click.option("--seed", type=int, default=1)
@click.pass_context
def simulate_cmd(ctx: click.Context, scenario: Path | None, ids: tuple[str, ...],
                 dc09: str | None, hub_id: str | None, devices: tuple[str, ...], count: int,
                 interval: float, seed: int) -> None:
    """Run simulated devices: a scenario file, or blood pressure cuffs behind one hub."""
    settings = settings_of(ctx)
    try:
        broker = mqtt_url(settings)
    except ConfigurationError as exc:
        fail(str(exc))
    if scenario is not None:
        _run_scenario(scenario, broker, settings.mqtt_protocol, ids, dc09)
        return
    if hub_id is None:
        fail("give --scenario FILE, or --hub CLIENT for simulated cuffs")
    _run_cuffs(broker, settings.mqtt_protocol, hub_id, devices, count, interval, seed)


def _run_scenario(path: Path, broker: str, protocol: int, ids: tuple[str, ...],
                  dc09: str | None) -> None:
    from simulators.scenario import ScenarioError, run_file

    mapping = {}
    for item in ids:
        name, equals, value = item.partition("=")
        if not equals or not name or not value:
            fail(f"--id {item!r} must look like NAME=DEVICE", 2)
        mapping[name] = value
    receiver = None
    if dc09 is not None:
        host, colon, port = dc09.rpartition(":")
        if not colon or not port.isdigit():
            fail(f"--dc09 {dc09!r} must look like HOST:PORT", 2)
        receiver = (host, int(port))
    try:
        report = run_file(path, mqtt_url=broker, protocol=protocol, dc09=receiver, ids=mapping)
    except ScenarioError as exc:
        fail(str(exc), 2)
    except (OSError, MqttUrlError) as exc:
        fail(f"scenario {path}: {exc}")
    click.echo(dumps(report.to_json()))


def _run_cuffs(broker: str, protocol: int, hub_id: str, devices: tuple[str, ...], count: int,
               interval: float, seed: int) -> None:
    from simulators.bpm import payload_source
    from simulators.hub import Hub, HubError, run_fleet

    try:
        hub = Hub(broker, hub_id, protocol=protocol)
        hub.connect()
    except (MqttUrlError, HubError, OSError) as exc:
        fail(str(exc))
    fleet = [(device_id, payload_source(seed + index))
             for index, device_id in enumerate(devices or (hub_id,))]
    stop = threading.Event()
    try:
        sent = run_fleet(hub, fleet, count=count, interval=interval, stop=stop)
    except KeyboardInterrupt:
        sent = -1
    except HubError as exc:
        fail(str(exc))
    finally:
        hub.close()
    click.echo(dumps({"hub": hub_id, "published": sent}))
