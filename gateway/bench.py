"""Decode throughput per channel: payloads per second through each registered adapter.

The workload is realistic valid payloads from the device simulators (``simulators.gatt`` and
``simulators.bpm``), decoded in one thread, so a rate is what one core achieves. Each channel
is timed with ``time.perf_counter`` for about ``seconds_per_adapter``, checking the clock once
per pass over its payloads so the timer costs little. A channel without simulated payloads
(a text protocol, say) is left out and logged rather than timed on a made-up input.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapters import (
    ble_battery,
    ble_body_composition,
    ble_bpm,
    ble_date_time,
    ble_glucose,
    ble_glucose_context,
    ble_icp,
    ble_plx,
    ble_temperature,
    ble_weight,
)
from adapters.errors import DecodeError
from adapters.model import DEFAULT_ZONE, DecodeContext
from adapters.registry import ADAPTERS, Adapter
from simulators import bpm, documents
from simulators import dc09 as dc09_sim
from simulators import documents_home as home
from simulators import gatt as sim
from simulators import scaip as scaip_sim
from simulators.devices_home import ecg_counts

log = logging.getLogger(__name__)

_START = datetime(2024, 5, 6, 6, 30, tzinfo=UTC)


def sample_payloads(
    seed: int = 1, count: int = 16, zone: tzinfo = DEFAULT_ZONE
) -> dict[str, list[bytes]]:
    """``count`` realistic valid payloads per simulated channel, reproducible from ``seed``."""
    rng = random.Random(seed)
    cuff = bpm.payload_source(seed, zone)

    def d(low: int, high: int, places: int = 0) -> Decimal:
        return Decimal(rng.randint(low, high)).scaleb(-places)

    out: dict[str, list[bytes]] = {}
    for i in range(count):
        at = _START + timedelta(minutes=37 * i)
        kg = d(9000, 22000) * Decimal("0.005")
        samples = {
            ble_bpm.CHANNEL: cuff(at),
            ble_icp.CHANNEL: sim.encode_cuff_pressure(
                sim.CuffPressure(d(0, 180), pulse=d(55, 95), user_id=1), zone),
            ble_weight.CHANNEL: sim.encode_weight(sim.WeightReading(
                kg, measured_at=at, user_id=1, bmi=d(180, 320, 1), height=d(1500, 1900, 3)),
                zone),
            ble_body_composition.CHANNEL: sim.encode_body_composition(sim.BodyComposition(
                d(120, 380, 1), measured_at=at, user_id=1, basal_metabolism=d(5000, 9000),
                muscle_percentage=d(300, 450, 1), body_water_mass=d(5000, 9000) * Decimal("0.005"),
                impedance=d(4000, 7000, 1), weight=kg), zone),
            ble_plx.CHANNEL_SPOT_CHECK: sim.encode_plx_spot_check(sim.PlxSpotCheck(
                d(920, 990, 1), d(55, 100), measured_at=at, status=0x0100, device_status=0,
                pai=d(10, 200, 1)), zone),
            ble_plx.CHANNEL_CONTINUOUS: sim.encode_plx_continuous(sim.PlxContinuous(
                d(92, 99), d(55, 100), fast=(d(92, 99), d(55, 100)), status=0x0020,
                pai=d(10, 200, 1))),
            ble_glucose.CHANNEL: sim.encode_glucose(sim.GlucoseReading(
                100 + i, at, d(40, 150, 1), mmol=True, time_offset=0,
                context_follows=bool(i % 2)), zone),
            ble_glucose_context.CHANNEL: sim.encode_glucose_context(sim.GlucoseContext(
                100 + i, carbohydrate=(1 + i % 7, d(10, 90)), meal=1 + i % 5,
                tester_health=(1, 5), hba1c=d(50, 90, 1))),
            ble_temperature.CHANNEL: sim.encode_temperature(sim.TemperatureReading(
                d(3610, 3850, 2), measured_at=at, site=3), zone),
            ble_battery.CHANNEL: sim.encode_battery(sim.BatteryLevel(rng.randint(0, 100))),
            ble_date_time.CHANNEL: sim.encode_device_clock(sim.DeviceClock(
                (at + timedelta(seconds=rng.randint(-90, 90))).astimezone(zone)
                .replace(tzinfo=None))),
        }
        samples.update(_documents_and_alarms(i, at, d))
        samples.update(_home_tests(i, at, d))
        for channel, payload in samples.items():
            out.setdefault(channel, []).append(payload)
    return out


def _documents_and_alarms(i: int, at: datetime,
                          d: Callable[..., Decimal]) -> dict[str, bytes]:
    """Payloads of the JSON documents, SCAIP and DC-09 channels, as the simulators send them."""
    frame_at = at.astimezone(UTC)
    return {
        "spirometer": documents.spirometry(at, fev1=d(150, 400, 2), fvc=d(200, 500, 2),
                                           pef=d(200, 600), quality="A", manoeuvres=3, seq=i),
        "dispenser": documents.dispenser_event(
            "dose_taken", at, dose=documents.Dose(f"D-{i}", at, compartment=1 + i % 28),
            remaining_doses=28 - i % 28, confirmation="button", seq=i),
        "lock": documents.lock_event("unlocked", at, method="app", credential=f"STAFF-{i}",
                                     battery_percent=80, seq=i),
        "status": documents.device_status(at, battery_percent=70, rssi_dbm=-60,
                                          firmware="2.4.1", uptime_s=3600 * i, seq=i),
        "scaip": scaip_sim.alarm(f"{i:012d}", "8031372", 3) if i % 2 else scaip_sim.heartbeat(
            f"{i:012d}", "8031372"),
        "wipe": (b'{"v":1,"type":"wipe_done","at":"%s","nonce":"n%012d"}'
                 % (frame_at.isoformat().encode(), i)),
        "dc09": dc09_sim.encode_frame("SIA-DCS", i % 10000, "1234AB",
                                      dc09_sim.sia_data("1234AB", "MA", f"{i % 100:03d}"),
                                      timestamp=frame_at),
    }


def _home_tests(i: int, at: datetime, d: Callable[..., Decimal]) -> dict[str, bytes]:
    """Payloads of the home-test and supervision documents, as their simulators send them."""
    samples, rate = ecg_counts(random.Random(i), "sinus_rhythm", 70.0, 30)
    return {
        "calprotectin": home.calprotectin(at, d(20, 600), seq=i),
        "tonometer": home.intraocular_pressure(at, right=d(10, 25), left=d(10, 25), seq=i),
        "urinalysis": home.urinalysis(at, {"glucose": "negative", "protein": "trace",
                                           "ph": d(50, 80, 1)}, seq=i),
        "night_supervision": home.night_supervision("check_done", at, check_id=f"C-{i}",
                                                    scheduled_at=at, seq=i),
        "ecg": home.ecg(at, samples, sampling_frequency=300, uv_per_count=Decimal(5),
                        rhythm="sinus_rhythm", heart_rate=Decimal(rate), seq=i),
    }


def _rate(adapter: Adapter, payloads: list[bytes], ctx: DecodeContext, seconds: float) -> float:
    for payload in payloads:  # warm-up pass; also proves every sample is accepted
        adapter(payload, ctx)
    decoded = 0
    clock = time.perf_counter
    started = clock()
    elapsed = 0.0
    while elapsed < seconds:
        for payload in payloads:
            adapter(payload, ctx)
        decoded += len(payloads)
        elapsed = clock() - started
    return decoded / elapsed


def run_decode_bench(out: Path, seconds_per_adapter: float = 1.0) -> dict[str, float]:
    """Time every registered adapter on simulated payloads; write and return payloads/s.

    ``out`` receives JSON: one rate per channel, plus ``python`` (implementation and version)
    and ``machine`` (platform details). A simulated payload that an adapter rejects is a bug in
    the simulator or the adapter, and raises DecodeError rather than skewing the figure.
    """
    if seconds_per_adapter <= 0:
        raise ValueError(f"seconds_per_adapter must be positive, not {seconds_per_adapter}")
    samples = sample_payloads()
    ctx = DecodeContext()
    rates: dict[str, float] = {}
    for channel in sorted(ADAPTERS):
        payloads = samples.get(channel)
        if not payloads:
            log.warning("bench: no simulated payloads for %s; not timed", channel)
            continue
        try:
            rates[channel] = _rate(ADAPTERS[channel], payloads, ctx, seconds_per_adapter)
        except DecodeError as exc:
            raise DecodeError(channel, f"simulated payload rejected: {exc.reason}") from exc
    report: dict[str, Any] = {
        **rates,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor() or None,
            "cpu_count": os.cpu_count(),
        },
    }
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return rates
