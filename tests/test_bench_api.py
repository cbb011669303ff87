"""The API benchmark: a small run fills the store, ingests live and reads through FHIR."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from gateway.bench_api import run_api_bench
from gateway.services.mosquitto import MosquittoProcess


def test_a_small_run_fills_the_store_measures_and_writes_its_figures(
        tmp_path: Path, database_url: str, mosquitto: MosquittoProcess) -> None:
    # The broker fixture only proves Mosquitto is installed; the bench starts its own.
    assert mosquitto.is_running()
    out = tmp_path / "api.json"
    figures = run_api_bench(out, observations=20_000, patients=20, days=40, requests=30,
                            ingest_rate=200, warmup=5, hubs=2, cuffs_per_hub=3, settle_s=1.0,
                            database_url=database_url)
    assert json.loads(out.read_text()) == json.loads(json.dumps(figures))
    stored = figures["observations"]
    assert stored["requested"] == stored["inserted"] == stored["stored"] == 20_000
    assert stored["load_seconds"] > 0
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(DISTINCT patient_key),"
                           " count(*) FILTER (WHERE patient_key IS NULL) FROM observations"
                           ).fetchone()
    # The twenty patients of the history plus the six live cuffs' patients, every row
    # attributed to one.
    assert row == (26, 0)
    for window in ("last_24h", "last_30d"):
        series = figures[window]
        assert series["requests"] == 30
        assert 0 < series["p50_ms"] <= series["p99_ms"] <= series["max_ms"]
        assert series["resources_per_request"] > 0
    # 1,000 rows per patient over 40 days: some 25 a day, some 750 in 30 days; a resource
    # is one row, or four when a blood-pressure reading is one panel.
    assert 10 < figures["last_24h"]["resources_per_request"] < 30
    assert 450 < figures["last_30d"]["resources_per_request"] <= 750
    ingest = figures["ingest"]
    assert ingest["target_readings_per_s"] == 200
    assert ingest["achieved_readings_per_s"] > 0
    assert ingest["published_readings_per_s"] > 0
    assert ingest["readings_during_measurement"] > 0
    assert set(figures["targets"]) == {"last_24h_p50_ms", "last_24h_p99_ms",
                                       "last_30d_p99_ms", "ingest_readings_per_s"}
    assert all(isinstance(v["pass"], bool) for v in figures["targets"].values())
    machine = figures["machine"]
    assert machine["cpu_count"] >= 1
    assert machine["postgresql"][:2].isdigit()


def test_the_bench_refuses_a_database_that_is_not_empty(tmp_path: Path,
                                                        database_url: str) -> None:
    from gateway import db

    db.migrate(database_url)
    with pytest.raises(ValueError, match="already holds an aidlink schema"):
        run_api_bench(tmp_path / "api.json", observations=20_000, patients=20,
                      database_url=database_url)
    assert not (tmp_path / "api.json").exists()


@pytest.mark.parametrize(("options", "message"), [
    ({"requests": 0}, r"^requests must be positive, not 0$"),
    ({"observations": 100, "patients": 20}, r"fewer than 10 each"),
])
def test_the_bench_refuses_bad_sizes(tmp_path: Path, options: dict[str, int],
                                     message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_api_bench(tmp_path / "api.json", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "api.json").exists()
