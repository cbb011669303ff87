"""The decode benchmark: a short run writes one positive rate per simulated channel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.registry import ADAPTERS
from gateway.bench import run_decode_bench, sample_payloads


def test_bench_writes_a_positive_rate_per_channel(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    rates = run_decode_bench(out, seconds_per_adapter=0.01)
    simulated = sorted(set(sample_payloads()) & set(ADAPTERS))
    assert sorted(rates) == simulated
    assert all(rate > 0 for rate in rates.values())
    report = json.loads(out.read_text(encoding="utf-8"))
    assert {key: report[key] for key in simulated} == rates
    assert report["python"].split()[0] in {"CPython", "PyPy"}
    assert set(report["machine"]) == {"platform", "machine", "processor", "cpu_count"}


def test_bench_samples_cover_every_adapter() -> None:
    assert sorted(ADAPTERS) == sorted(sample_payloads())


def test_bench_refuses_a_non_positive_duration(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seconds_per_adapter must be positive"):
        run_decode_bench(tmp_path / "bench.json", seconds_per_adapter=0)
    assert not (tmp_path / "bench.json").exists()
