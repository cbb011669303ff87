"""The ingest benchmark: a tiny run goes through all three phases and writes figures and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.bench_ingest import keep_logs, run_ingest_bench
from gateway.bench_ingest_plot import writeback, writeback_note
from gateway.services.mosquitto import MosquittoProcess
from gateway.services.postgres import find_postgres_bin_dir
from tests.conftest import missing_component


def test_a_tiny_run_measures_every_phase_and_writes_figures_and_plot(
        tmp_path: Path, mosquitto: MosquittoProcess) -> None:
    # The broker fixture only proves Mosquitto is installed; the bench starts its own.
    assert mosquitto.is_running()
    if find_postgres_bin_dir() is None:
        missing_component("PostgreSQL not installed")
    out = tmp_path / "ingest.json"
    # Phases of a few seconds: on a busy machine the first commits of a shorter window can
    # land after it ends.
    figures = run_ingest_bench(out, devices=10, seconds_ceiling=2.0, seconds_throughput=5.0,
                               latency_rate=200, seconds_latency=2.0, publishers=1,
                               max_backlog=2000)
    assert json.loads(out.read_text()) == json.loads(json.dumps(figures))
    png = out.with_suffix(".png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    # CPU per stored reading of each process group, from their CPU time over the window.
    cpu = figures["throughput"]["cpu_us_per_reading"]
    assert set(cpu) == {"gateway", "mosquitto", "postgresql"}
    assert all(us > 0 for us in cpu.values()), cpu
    assert figures["phases"]["throughput"]["cpu_s"]["gateway"] > 0

    # Nothing lost, nothing stored twice: every reading published while the gateway was
    # subscribed is one stored reading (one systolic row), and none was refused.
    assert figures["stored_readings"] == figures["published_to_gateway"] > 0
    assert figures["dead_letters"] == {"payloads": 0, "messages": 0}
    assert figures["broker_acknowledged"] == figures["published"]
    assert figures["rows_per_reading"] == 4.0

    assert figures["ceiling"]["messages_per_s"] > 0
    throughput = figures["throughput"]
    assert throughput["readings_per_s"] > 0
    assert throughput["rows_per_s"] == pytest.approx(4 * throughput["readings_per_s"], rel=0.1)
    assert throughput["to_ceiling"] == pytest.approx(
        throughput["readings_per_s"] / figures["ceiling"]["messages_per_s"], abs=0.001)

    latency = figures["latency"]
    assert latency["published_per_s"] == pytest.approx(200, rel=0.1)
    committed, queryable = latency["publish_to_committed"], latency["publish_to_queryable"]
    assert committed["readings"] == pytest.approx(400, rel=0.1)
    for series in (committed, queryable):
        assert 0 < series["p50_ms"] <= series["p99_ms"] <= series["max_ms"] < 5000
    # A reading becomes queryable after its commit time stamp, never before.
    assert latency["committed_to_queryable_p50_ms"] >= 0
    # The latency phase starts from a checkpoint, timed.
    assert 0 <= figures["checkpoint_before_latency_s"] < 60

    timeline = figures["timeline"]
    phases = [entry["phase"] for entry in timeline]
    assert {"ceiling", "throughput", "latency"} <= set(phases)
    rss = [entry["gateway_rss_mb"] for entry in timeline if "gateway_rss_mb" in entry]
    assert rss and all(20 < value < 2000 for value in rss)
    assert sum(entry.get("committed", 0) for entry in timeline) > 0

    assert set(figures["targets"]) == {"throughput_readings_per_s", "throughput_to_ceiling",
                                       "latency_p99_ms", "gateway_rss_peak_mb"}
    assert all(isinstance(v["pass"], bool) for v in figures["targets"].values())
    assert figures["settings"]["batch_max_rows"] >= 1
    assert figures["settings"]["broker"]["max_queued_messages"] == "0"
    machine = figures["machine"]
    assert machine["postgresql"][:2].isdigit()
    assert "mosquitto" in machine["mosquitto"].lower()
    assert len(machine["load_average_at_start"]) == 3


@pytest.mark.parametrize(("options", "message"), [
    ({"devices": 0}, r"^devices must be positive, not 0$"),
    ({"latency_rate": -1.0}, r"^latency_rate must be positive, not -1.0$"),
    ({"devices": 2, "publishers": 3}, r"^2 devices cannot be shared by 3 publishers$"),
])
def test_the_bench_refuses_bad_sizes(tmp_path: Path, options: dict[str, float],
                                     message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_ingest_bench(tmp_path / "ingest.json", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "ingest.json").exists()


def test_two_gateways_share_the_stream_and_the_ceiling_is_shared_alike(
        tmp_path: Path, mosquitto: MosquittoProcess) -> None:
    assert mosquitto.is_running()
    if find_postgres_bin_dir() is None:
        missing_component("PostgreSQL not installed")
    out = tmp_path / "ingest.json"
    figures = run_ingest_bench(out, devices=10, seconds_ceiling=2.0, seconds_throughput=4.0,
                               latency_rate=200, seconds_latency=2.0, publishers=1,
                               gateways=2, max_backlog=2000)
    assert figures["options"]["gateways"] == 2
    # Every reading stored once between them, and each stored a share.
    assert figures["stored_readings"] == figures["published_to_gateway"] > 0
    # Publishing resumed only once both subscriptions were in place at the broker, and every
    # phase drained within its time (a drain that times out leaves a "had not ..." note).
    assert figures["unrouted_to_gateway"] == 0
    assert [note for note in figures["notes"] if "had not" in note] == []
    assert sum(figures["stored_by_gateway"]) == figures["stored_readings"]
    assert min(figures["stored_by_gateway"]) > 0, figures["stored_by_gateway"]
    watched = {key for entry in figures["timeline"] for key in entry if key.startswith("cpu_")}
    assert {"cpu_subscriber-0", "cpu_subscriber-1", "cpu_gateway"} <= watched


def test_a_run_that_fell_short_keeps_the_gateways_and_the_brokers_logs(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    (scratch / "mqtt").mkdir(parents=True)
    (scratch / "gateway-0.log").write_text("gateway 0\n")
    (scratch / "gateway-1.log").write_text("gateway 1\n")
    (scratch / "mqtt" / "mosquitto.log").write_text("broker\n")
    (scratch / "pg").mkdir()
    kept = keep_logs(scratch, tmp_path / "ingest-logs")
    assert sorted(p.name for p in kept.iterdir()) == ["gateway-0.log", "gateway-1.log",
                                                      "mosquitto.log"]
    assert (kept / "gateway-1.log").read_text() == "gateway 1\n"


def test_the_machines_writeback_settings_are_read_and_the_default_is_noted(
        tmp_path: Path) -> None:
    (tmp_path / "dirty_background_bytes").write_text("0\n")
    (tmp_path / "dirty_background_ratio").write_text("10\n")
    (tmp_path / "dirty_expire_centisecs").write_text("3000\n")
    (tmp_path / "dirty_ratio").write_text("not a number\n")
    settings = writeback(tmp_path)
    assert settings == {"dirty_background_bytes": 0, "dirty_background_ratio": 10,
                        "dirty_expire_centisecs": 3000}
    note = writeback_note(settings)
    assert note is not None and "10 % of memory" in note
    assert writeback_note({**settings, "dirty_background_bytes": 33554432}) is None
    # Nothing to read (not Linux): no settings, and nothing to say about them.
    assert writeback(tmp_path / "absent") == {}
    assert writeback_note({}) is None
