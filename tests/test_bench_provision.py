"""The provisioning benchmark: a short run issues and stores every certificate and reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.bench_provision import run_provision_bench


def test_a_short_run_issues_every_certificate_and_writes_its_figures(
        tmp_path: Path, database_url: str) -> None:
    out = tmp_path / "provision.json"
    figures = run_provision_bench(out, count=20, database_url=database_url)
    assert json.loads(out.read_text()) == figures
    series = {name: figures.pop(name) for name in ("issue_ms", "signing_ms")}
    setup = figures.pop("ca_setup_ms")
    python = figures.pop("python")
    version = figures.pop("cryptography")
    # Twenty measured, plus the first one that made the CAs.
    assert figures == {"certificates": 20, "stored": 21, "key_algorithm": "EC-P256",
                       "ca_key_algorithm": "EC-P384", "target_ms": 5.0,
                       "durable_postgres": None}
    for values in series.values():
        assert list(values) == ["p50", "p99", "mean", "max"]
        assert 0 < values["p50"] <= values["p99"] <= values["max"]
    # Signing alone is part of issuing, so it cannot take longer.
    assert series["signing_ms"]["p50"] < series["issue_ms"]["p50"]
    assert setup > 0
    assert python.split()[0] in {"CPython", "PyPy"}
    assert version.split(".")[0].isdigit()


def test_the_bench_refuses_a_non_positive_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^count must be positive, not 0$"):
        run_provision_bench(tmp_path / "provision.json", count=0)
    assert not (tmp_path / "provision.json").exists()
