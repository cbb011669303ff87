"""The provisioning benchmark: a short run issues and stores every certificate, onboards a
few devices in bulk, and writes every figure with its verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.bench_provision import run_provision_bench
from gateway.cli import main


def test_a_short_run_issues_every_certificate_and_writes_its_figures(
        tmp_path: Path, database_url: str) -> None:
    out = tmp_path / "provision.json"
    figures = run_provision_bench(out, count=20, bulk_count=50, database_url=database_url)
    assert json.loads(out.read_text()) == figures
    series = {name: figures.pop(name) for name in ("issue_ms", "signing_ms")}
    setup = figures.pop("ca_setup_ms")
    python = figures.pop("python")
    version = figures.pop("cryptography")
    per_s = figures.pop("certificates_per_s")
    bulk = figures.pop("bulk")
    targets = figures.pop("targets")
    # Twenty measured, plus the first one that made the CAs.
    assert figures == {"certificates": 20, "stored": 21, "key_algorithm": "EC-P256",
                       "ca_key_algorithm": "EC-P384", "target_ms": 5.0,
                       "durable_postgres": None}
    for values in series.values():
        assert list(values) == ["p50", "p99", "mean", "max"]
        assert 0 < values["p50"] <= values["p99"] <= values["max"]
    # Signing alone is part of issuing, so it cannot take longer.
    assert series["signing_ms"]["p50"] < series["issue_ms"]["p50"]
    # The rate is the measured certificates over the time spent issuing them.
    assert per_s == pytest.approx(1000 / series["issue_ms"]["mean"], rel=0.01)
    assert setup > 0
    assert python.split()[0] in {"CPython", "PyPy"}
    assert version.split(".")[0].isdigit()
    assert bulk["devices"] == bulk["mtls"]["devices"] == bulk["mtls"]["certificates"] == 50
    assert bulk["seconds"] > 0 and bulk["devices_per_s"] > 0
    # Every target is judged on the figure it names; 50 devices get 50/10,000 of 60 s.
    assert targets == {
        "issue_p50_ms": {"target": "<= 5", "measured": series["issue_ms"]["p50"],
                         "pass": series["issue_ms"]["p50"] <= 5},
        "certificates_per_s": {"target": ">= 200", "measured": per_s, "pass": per_s >= 200},
        "bulk_seconds": {"target": "<= 0.3", "measured": bulk["seconds"],
                         "pass": bulk["seconds"] <= 0.3},
        "bulk_devices_per_s": {"target": ">= 166.7", "measured": bulk["devices_per_s"],
                               "pass": bulk["devices_per_s"] >= 166.7},
    }


def test_a_bulk_count_of_zero_skips_bulk_onboarding(tmp_path: Path, database_url: str) -> None:
    out = tmp_path / "provision.json"
    figures = run_provision_bench(out, count=3, bulk_count=0, database_url=database_url)
    assert figures["bulk"] is None
    assert sorted(figures["targets"]) == ["certificates_per_s", "issue_p50_ms"]
    assert json.loads(out.read_text())["bulk"] is None


def test_the_command_runs_both_parts_on_its_own_postgres(tmp_path: Path) -> None:
    out = tmp_path / "provision.json"
    result = CliRunner().invoke(main, ["bench", "provision", "--out", str(out), "--count", "10",
                                       "--bulk-count", "20"])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["durable_postgres"] is True
    assert written["certificates"] == 10 and written["bulk"]["devices"] == 20
    assert set(written["targets"]) == {"issue_p50_ms", "certificates_per_s", "bulk_seconds",
                                       "bulk_devices_per_s"}
    assert all(isinstance(v["pass"], bool) for v in written["targets"].values())


def test_the_bench_refuses_a_non_positive_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^count must be positive, not 0$"):
        run_provision_bench(tmp_path / "provision.json", count=0)
    assert not (tmp_path / "provision.json").exists()


def test_the_bench_refuses_a_negative_bulk_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^bulk_count must be 0 \(no bulk onboarding\) or"
                                         r" more, not -1$"):
        run_provision_bench(tmp_path / "provision.json", count=5, bulk_count=-1)
    assert not (tmp_path / "provision.json").exists()
