"""The figures of ``aidlink bench ingest``: read from the store after the run, judged against
the targets, printed as a table and drawn as a PNG (throughput, latency and memory per second,
phases shaded)."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg

from gateway.bench_ingest_load import SYSTOLIC
from gateway.services.mosquitto import find_mosquitto

TARGETS = {"throughput_readings_per_s": (">=", 20_000.0),
           "throughput_to_ceiling": (">=", 0.5),
           "latency_p99_ms": ("<=", 250.0),
           "gateway_rss_peak_mb": ("<=", 300.0)}
_COMMIT = "extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8"


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def _latency(values_s: list[float]) -> dict[str, Any]:
    if not values_s:
        return {"readings": 0}
    ms = [v * 1000 for v in values_s]
    return {"readings": len(ms), "p50_ms": round(statistics.median(ms), 2),
            "p99_ms": round(_percentile(ms, 0.99), 2), "max_ms": round(max(ms), 2),
            "mean_ms": round(statistics.fmean(ms), 2)}


def analyse(url: str, phases: dict[str, dict[str, Any]], started: float,
            per_reading: float, probe: list[tuple[str, float, float]]) -> dict[str, Any]:
    """Rates and latencies of the run from the store's publish and commit time stamps."""
    with psycopg.connect(url) as conn:
        readings = conn.execute(f"SELECT {_COMMIT}, extract(epoch FROM ts)::float8"
                                " FROM observations WHERE code = %s", (SYSTOLIC,)).fetchall()
        begin, end = phases["throughput"]["begin"], phases["throughput"]["end"]
        row = conn.execute(f"SELECT count(*) FROM observations WHERE {_COMMIT} >= %s"
                           f" AND {_COMMIT} < %s", (begin, end)).fetchone()
        rows_in_window = 0 if row is None else int(row[0])
        row = conn.execute("SELECT count(*), coalesce(sum(times), 0) FROM dead_letters"
                           ).fetchone()
        commits = {(d, p): c for d, p, c in conn.execute(
            f"SELECT device_id, extract(epoch FROM ts)::float8, {_COMMIT} FROM observations"
            " WHERE code = %s AND device_id = ANY(%s)",
            (SYSTOLIC, sorted({d for d, _, _ in probe})))}
    dead = (0, 0) if row is None else (int(row[0]), int(row[1]))
    ceiling = phases["ceiling"]
    ceiling_rate = ceiling["consumed"] / (ceiling["end"] - ceiling["begin"])
    seconds = end - begin
    committed = sum(1 for c, _ in readings if begin <= c < end)
    rate = committed / seconds
    lat_begin, lat_end = phases["latency"]["begin"], phases["latency"]["end"]
    in_latency = [(c, p) for c, p in readings if lat_begin <= p < lat_end]
    seen = [(d, p, v) for d, p, v in probe if lat_begin <= p < lat_end]
    per_second: dict[int, list[float]] = defaultdict(list)
    for c, p in readings:
        per_second[int(c - started)].append(c - p)
    return {
        "reading": "one device message: one 0x2A35 blood pressure measurement",
        "rows_per_reading": round(per_reading, 3),
        "stored_readings": len(readings),
        "dead_letters": {"payloads": dead[0], "messages": dead[1]},
        "ceiling": {"messages_per_s": round(ceiling_rate, 1), "seconds": round(
            ceiling["end"] - ceiling["begin"], 2),
            "published_per_s": round(ceiling["published"] / (ceiling["end"] - ceiling["begin"]),
                                     1)},
        "throughput": {"readings_per_s": round(rate, 1),
                       "rows_per_s": round(rows_in_window / seconds, 1),
                       "published_per_s": round(phases["throughput"]["published"] / seconds, 1),
                       "seconds": round(seconds, 2),
                       "to_ceiling": round(rate / ceiling_rate, 3) if ceiling_rate else None,
                       "cpu_us_per_reading": _cpu_per_reading(phases["throughput"])},
        "latency": {"rate_asked": phases["latency"]["rate"],
                    "published_per_s": round(phases["latency"]["published"]
                                             / (lat_end - lat_begin), 1),
                    "seconds": round(lat_end - lat_begin, 2),
                    "publish_to_committed": _latency([c - p for c, p in in_latency]),
                    "publish_to_queryable": _latency([v - p for _, p, v in seen]),
                    "committed_to_queryable_p50_ms": round(statistics.median(
                        [(v - commits[(d, p)]) * 1000 for d, p, v in seen
                         if (d, p) in commits]), 2) if seen else None},
        "per_second": {second: {"committed": len(values),
                                "latency_p50_ms": round(statistics.median(values) * 1000, 2),
                                "latency_p99_ms": round(_percentile(values, 0.99) * 1000, 2)}
                       for second, values in sorted(per_second.items())},
    }


def merge_timeline(samples: list[dict[str, Any]],
                   per_second: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry a second: the sampler's figures, rates as differences, the store's figures."""
    timeline, previous = [], None
    for sample in samples:
        entry = dict(sample)
        if previous is not None:
            span = max(sample["t"] - previous["t"], 1e-3)
            entry["published_per_s"] = round((sample["published"] - previous["published"])
                                             / span, 1)
            if sample["phase"] == previous["phase"] == "ceiling":
                entry["delivered_per_s"] = round((sample["consumed"] - previous["consumed"])
                                                 / span, 1)
        entry.update(per_second.get(int(sample["t"]) - 1, {}))
        timeline.append(entry)
        previous = sample
    return timeline


def machine(url: str) -> dict[str, Any]:
    """The machine and the versions of the parts measured."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    broker = find_mosquitto()
    version = "unknown"
    if broker is not None:
        shown = subprocess.run([broker, "-h"], capture_output=True, text=True, check=False)
        version = (shown.stdout or shown.stderr).splitlines()[0] if (shown.stdout or
                                                                     shown.stderr) else version
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "postgresql": "unknown" if row is None else str(row[0]), "durable_postgres": True,
            "mosquitto": version, "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
            "kernel_writeback": writeback()}


# The kernel's page-cache writeback settings that decide how much written data may pile up
# before it is written out in one burst (Linux: /proc/sys/vm).
WRITEBACK_SETTINGS = ("dirty_background_bytes", "dirty_background_ratio", "dirty_bytes",
                      "dirty_ratio", "dirty_expire_centisecs", "dirty_writeback_centisecs")


def writeback(root: Path = Path("/proc/sys/vm")) -> dict[str, int]:
    """This machine's writeback settings; empty where there are none to read."""
    found = {}
    for name in WRITEBACK_SETTINGS:
        try:
            found[name] = int((root / name).read_text())
        except (OSError, ValueError):
            continue
    return found


def writeback_note(settings: dict[str, int]) -> str | None:
    """A note when background writeback starts only at a share of memory (the default), so
    that commits may stall behind seconds of other writes (docs/OPERATIONS.md)."""
    if settings.get("dirty_background_bytes", 1) != 0:
        return None
    return (f"the kernel starts writing back at {settings.get('dirty_background_ratio')} % of"
            " memory (vm.dirty_background_ratio; vm.dirty_background_bytes is 0): the store's"
            " writes pile up and are written out at once, and commits wait behind them (see"
            " docs/OPERATIONS.md, the database host)")


def _cpu_per_reading(phase: dict[str, Any]) -> dict[str, float]:
    """Microseconds of CPU each process group spent per reading the gateways stored."""
    stored = phase["consumed"]
    if not stored:
        return {}
    return {name: round(seconds / stored * 1e6, 1) for name, seconds in phase["cpu_s"].items()}


def verdicts(figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with the measured figure and pass or miss."""
    rss = [s["gateway_rss_mb"] for s in figures["timeline"] if "gateway_rss_mb" in s]
    measured = {"throughput_readings_per_s": figures["throughput"]["readings_per_s"],
                "throughput_to_ceiling": figures["throughput"]["to_ceiling"],
                "latency_p99_ms": figures["latency"]["publish_to_queryable"].get("p99_ms"),
                "gateway_rss_peak_mb": max(rss, default=None)}
    out = {}
    for name, (sense, target) in TARGETS.items():
        value = measured[name]
        ok = value is not None and (value >= target if sense == ">=" else value <= target)
        out[name] = {"target": f"{sense} {target:g}", "measured": value, "pass": ok}
    return out


def dumps(figures: dict[str, Any]) -> str:
    """The figures as JSON, one timeline entry per line."""
    head = {k: v for k, v in figures.items() if k != "timeline"}
    text = json.dumps(head, indent=2)
    lines = ",\n".join("    " + json.dumps(entry) for entry in figures["timeline"])
    return text[:-2] + ',\n  "timeline": [\n' + lines + "\n  ]\n}\n"


def table(figures: dict[str, Any]) -> str:
    """A few lines for a terminal."""
    c, t, lat = figures["ceiling"], figures["throughput"], figures["latency"]
    q, k = lat["publish_to_queryable"], lat["publish_to_committed"]
    rss = [s["gateway_rss_mb"] for s in figures["timeline"] if "gateway_rss_mb" in s]
    lines = [f"ceiling (broker -> plain subscriber): {c['messages_per_s']:>10,.0f} messages/s",
             f"gateway (publish -> committed):      {t['readings_per_s']:>10,.0f} readings/s"
             f" ({t['rows_per_s']:,.0f} rows/s), {t['to_ceiling']} of the ceiling",
             "CPU per stored reading: " + ", ".join(
                 f"{name} {us:,.0f} us" for name, us in t["cpu_us_per_reading"].items()),
             f"latency at {lat['published_per_s']:,.0f}/s: queryable p50 {q.get('p50_ms')} ms,"
             f" p99 {q.get('p99_ms')} ms, max {q.get('max_ms')} ms ({q['readings']} probed);"
             f" committed p50 {k.get('p50_ms')} ms, p99 {k.get('p99_ms')} ms",
             f"gateway RSS: peak {max(rss, default=0):.0f} MB,"
             f" median {statistics.median(rss) if rss else 0:.0f} MB"]
    lines += [f"{name:28} {v['target']:>10} {v['measured']!s:>10} "
              f"{'pass' if v['pass'] else 'MISS'}" for name, v in figures["targets"].items()]
    return "\n".join(lines)


def plot(figures: dict[str, Any], path: Path) -> None:
    """Throughput, latency and gateway memory per second over the run, phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = figures["timeline"]
    fig, (rates, lat, mem) = plt.subplots(3, 1, sharex=True, figsize=(11, 9),
                                          gridspec_kw={"height_ratios": [3, 2, 1]})

    def series(key: str) -> tuple[list[float], list[float]]:
        pairs = [(e["t"], e[key]) for e in timeline if key in e]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    for key, label in (("published_per_s", "published"),
                       ("delivered_per_s", "delivered to plain subscriber"),
                       ("committed", "committed by the gateway")):
        rates.plot(*series(key), label=label, linewidth=1.2)
    rates.set_ylabel("readings / s")
    rates.legend(loc="upper right", fontsize=8)
    for key, label in (("latency_p50_ms", "p50"), ("latency_p99_ms", "p99")):
        lat.plot(*series(key), label=f"publish to committed, {label}", linewidth=1.2)
    lat.set_yscale("log")
    lat.set_ylabel("latency, ms")
    lat.axhline(250, color="red", linestyle=":", linewidth=1, label="target p99 (at 5,000/s)")
    lat.legend(loc="upper right", fontsize=8)
    mem.plot(*series("gateway_rss_mb"), color="purple", linewidth=1.2)
    mem.set_ylabel("gateway RSS, MB")
    mem.set_xlabel("seconds since the start of the run")
    offset = figures["timeline_origin"]
    for name, colour in (("ceiling", "#dde8f5"), ("throughput", "#e3f2dd"),
                         ("latency", "#f7e6d5")):
        window = figures["phases"][name]
        for axis in (rates, lat, mem):
            axis.axvspan(window["begin"] - offset, window["end"] - offset, color=colour,
                         zorder=0)
        rates.text(window["begin"] - offset, 1.01, name, transform=rates.get_xaxis_transform(),
                   fontsize=9)
    fig.suptitle("aidlink bench ingest: QoS 1, "
                 f"{figures['options']['devices']:,} devices, durable PostgreSQL")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
