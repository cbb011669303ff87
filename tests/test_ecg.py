"""One-lead ECG recorder (document v1): a sampled waveform, a coded rhythm and a heart rate;
every reject reason; the docs; the simulator's rhythms and faults; and end to end, the
waveform through Mosquitto, PostgreSQL and the FHIR API as valueSampledData."""

from __future__ import annotations

import json
import random
import statistics
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from adapters import ecg
from adapters.errors import DecodeError
from adapters.model import Coded, DecodeContext, Observation, Sampled, Unit, dumps
from gateway.api.fhir import instant
from gateway.services.mosquitto import MosquittoProcess
from simulators import documents_home as sim
from simulators.devices_home import OneLeadEcg, ecg_counts
from tests.home_flow import documented_example, documented_schema, resources, run
from tests.support import api_client, bearer

CTX = DecodeContext()
AT = datetime(2024, 5, 2, 6, 15, tzinfo=UTC)
SCT = "http://snomed.info/sct"
SAMPLES = [2, 1, 24, -18, 200, -44, 3, 8]


def doc(**fields: Any) -> bytes:
    body: dict[str, Any] = {"v": 1, "type": "ecg", "at": "2024-05-02T08:15:00+02:00",
                            "lead": "I", "sampling_frequency": 300, "uv_per_count": 5,
                            "samples": SAMPLES, "rhythm": "sinus_rhythm"}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def wave(period: str = "3.333333", factor: str = "0.005", *flags: str,
         data: tuple[int, ...] = tuple(SAMPLES), seq: int | None = None) -> Observation:
    return Observation("11524-6", 131329, None, Unit.MV, AT, flags, sequence=seq,
                       sampled=Sampled(Decimal(0), Decimal(period), Decimal(factor), data))


def rhythm(code: str, display: str, *flags: str, seq: int | None = None) -> Observation:
    return Observation("8601-7", None, None, Unit.NONE, AT, flags, sequence=seq,
                       coded=Coded(SCT, code, display))


def test_af_recording_is_a_waveform_a_snomed_rhythm_and_an_ecg_heart_rate() -> None:
    payload = doc(seq=7, rhythm="atrial_fibrillation", heart_rate={"value": 96, "unit": "/min"})
    assert ecg.decode(payload, CTX) == [
        wave(seq=7), rhythm("164889003", "Atrial fibrillation", seq=7),
        Observation("8867-4", 147842, Decimal(96), Unit.PER_MIN, AT, sequence=7)]


@pytest.mark.parametrize(("text", "code", "display", "flags"), [
    ("sinus_rhythm", "426783006", "Sinus rhythm", ()),
    ("atrial_fibrillation", "164889003", "Atrial fibrillation", ()),
    ("inconclusive", "419984006", "Inconclusive", ()),
    ("too_noisy", "419984006", "Inconclusive", ("poor_recording",)),
])
def test_each_rhythm_has_its_snomed_code(text: str, code: str, display: str,
                                         flags: tuple[str, ...]) -> None:
    assert ecg.decode(doc(rhythm=text), CTX) == [wave("3.333333", "0.005", *flags),
                                                 rhythm(code, display, *flags)]


@pytest.mark.parametrize(("hz", "scale", "period", "factor"), [
    (512, "2.5", "1.953125", "0.0025"),  # 30 s at 512 Hz, the largest recording
    (300, "5", "3.333333", "0.005"),  # 1000/300 ms, kept to the nanosecond
    (250, "1", "4", "0.001"),
    (100, "1000", "10", "1.000"),  # the scale's own digits are kept
])
def test_period_is_1000_over_hz_ms_and_factor_is_mv_per_count(
        hz: int, scale: str, period: str, factor: str) -> None:
    payload = doc(sampling_frequency=hz).replace(b'"uv_per_count": 5', f'"uv_per_count": '
                                                 f'{scale}'.encode())
    sampled = ecg.decode(payload, CTX)[0].sampled
    assert sampled is not None
    assert (str(sampled.period_ms), str(sampled.factor)) == (period, factor)


def test_implausible_heart_rate_is_kept_and_unknown_fields_are_flagged() -> None:
    payload = doc(heart_rate={"value": 400, "unit": "/min"}, electrodes="thumbs")
    result = ecg.decode(payload, CTX)
    assert [o.flags for o in result] == [("unknown_fields",), ("unknown_fields",),
                                        ("implausible", "unknown_fields")]
    assert result[2].value == Decimal(400)


def test_a_full_30_s_at_512_hz_passes_beyond_the_64_kib_of_other_documents() -> None:
    payload = doc(sampling_frequency=512, samples=[-32768] * 15360)
    assert len(payload) > 64 * 1024
    sampled = ecg.decode(payload, CTX)[0].sampled
    assert sampled is not None and len(sampled.data) == 15360


# A valid full-length recording padded with whitespace past the channel's 128 KiB.
TOO_BIG = doc(sampling_frequency=512, samples=[-32768] * 15360)[:-1] + b" " * 20000 + b"}"


@pytest.mark.parametrize(("payload", "reason"), [
    (doc(samples=[]), "samples: no samples; a recording needs at least one (got [])"),
    (doc().replace(b"-18", b"-18.5"),
     "samples: sample 3 is -18.5, not an integer count "
     "(got [2, 1, 24, Decimal('-18.5'), 200, -44...)"),
    (doc(samples=[1, True]), "samples: sample 1 is True, not an integer count (got [1, True])"),
    (doc(samples=[1, 40000]), "samples: sample 1 is 40000, outside -32768..32767 "
     "(got [1, 40000])"),
    (doc(samples="AAEC"), "samples: expected a JSON array of integer counts (got 'AAEC')"),
    (doc(samples=[0] * 15361), "samples: 15361 samples; the limit is 15360 (30 s at 512 Hz) "
     "(got [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ...)"),
    (doc(samples=[0] * 9001),
     "samples: 9001 samples at 300 Hz are longer than 30 s (at most 9000)"),
    (doc(samples=None), "samples: field required"),
    (doc(sampling_frequency=1000),
     "sampling_frequency: Input should be less than or equal to 512 (got 1000)"),
    (doc(sampling_frequency=50),
     "sampling_frequency: Input should be greater than or equal to 100 (got 50)"),
    (doc().replace(b'"sampling_frequency": 300', b'"sampling_frequency": 300.0'),
     "sampling_frequency: Input should be a valid integer (got Decimal('300.0'))"),
    (doc(uv_per_count=0), "uv_per_count: Input should be greater than 0 (got 0)"),
    (doc(uv_per_count=5000), "uv_per_count: Input should be less than or equal to 1000 "
     "(got 5000)"),
    (doc(lead="II"), "lead: Input should be 'I' (got 'II')"),
    (doc(rhythm="flutter"), "rhythm: Input should be 'sinus_rhythm', 'atrial_fibrillation', "
     "'inconclusive' or 'too_noisy' (got 'flutter')"),
    (doc(heart_rate={"value": 72, "unit": "bpm"}), "heart_rate.unit: Input should be '/min' "
     "(got 'bpm')"),
    (doc(v=2), "unsupported document version 2 (supported: 1)"),
    (TOO_BIG, f"payload is {len(TOO_BIG)} bytes; the limit is 131072"),
])
def test_ecg_rejects_with_one_line_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        ecg.decode(payload, CTX)
    assert (caught.value.channel, caught.value.reason) == ("ecg", reason)


def test_builder_round_trips_and_the_docs_match_the_adapter() -> None:
    payload = sim.ecg(AT, SAMPLES, sampling_frequency=300, uv_per_count=Decimal(5),
                      rhythm="too_noisy", seq=3)
    assert ecg.decode(payload, CTX) == [wave("3.333333", "0.005", "poor_recording", seq=3),
                                        rhythm("419984006", "Inconclusive", "poor_recording",
                                               seq=3)]
    assert documented_schema("ecg") == ecg.json_schema()
    example, shown = documented_example("ecg")
    assert [dumps(r.to_json()) for r in ecg.decode(example, CTX)] == shown


def r_peaks(counts: list[int]) -> list[int]:
    """Sample indexes of R peaks: local maxima above half the tallest sample."""
    high = max(counts) / 2
    return [i for i in range(1, len(counts) - 1)
            if counts[i] > high and counts[i] >= counts[i - 1] and counts[i] > counts[i + 1]]


def rr_variation(counts: list[int]) -> float:
    """Coefficient of variation of the R-R intervals."""
    peaks = r_peaks(counts)
    intervals = [b - a for a, b in pairwise(peaks)]
    return statistics.stdev(intervals) / statistics.mean(intervals)


def test_simulated_sinus_rhythm_is_regular_and_atrial_fibrillation_is_not() -> None:
    sinus, sinus_rate = ecg_counts(random.Random(1), "sinus_rhythm", 72.0, 30)
    af, af_rate = ecg_counts(random.Random(1), "atrial_fibrillation", 72.0, 30)
    assert len(sinus) == len(af) == 9000
    assert rr_variation(sinus) < 0.05 < 0.12 < rr_variation(af)
    # The rate the device reports matches the beats in the strip.
    assert abs(len(r_peaks(sinus)) - sinus_rate / 2) <= 1.5
    assert abs(len(r_peaks(af)) - af_rate / 2) <= 1.5


def test_simulated_faults_are_refused_as_truncated_or_oversized() -> None:
    recorder = OneLeadEcg("ecg-1", start=AT, seed=2)
    recorder.truncated_share = 1.0
    [payload] = [p for channel, p in recorder.readings(AT) if channel == "ecg"]
    with pytest.raises(DecodeError, match=r"^ecg: invalid JSON"):
        ecg.decode(payload, CTX)
    recorder.truncated_share, recorder.oversized_share = 0.0, 1.0
    [(channel, payload)] = recorder.readings(AT.replace(hour=18))
    assert channel == "ecg"
    with pytest.raises(DecodeError) as caught:
        ecg.decode(payload, CTX)
    assert caught.value.reason == ("samples: 9600 samples at 300 Hz are longer than 30 s "
                                   "(at most 9000)")


def test_recordings_reach_the_clinician_as_fhir_sampled_data(
        database_url: str, mosquitto: MosquittoProcess) -> None:
    run_ = run(database_url, mosquitto.url, model="sim-ecg", device_cls=OneLeadEcg,
               readings=3, seed=11)
    waves = [o for o in run_.observations if o.sampled is not None]
    assert len(waves) == 3
    found = {(r["code"]["coding"][-1]["code"], r["effectiveDateTime"]): r
             for r in resources(run_.bundle)}
    items = {(i["code"], i["measured_at"]): i for i in run_.api_items}
    for recorded in waves:
        assert recorded.sampled is not None and recorded.measured_at is not None
        when = instant(recorded.measured_at)
        resource = found[("11524-6", when)]
        assert [(c["system"], c["code"]) for c in resource["code"]["coding"]] == [
            ("urn:iso:std:iso:11073:10101", "131329"), ("http://loinc.org", "11524-6")]
        assert resource["category"][0]["coding"][0]["code"] == "procedure"
        data = resource["valueSampledData"]
        assert data["origin"] == {"value": 0, "unit": "mV", "system": "http://unitsofmeasure.org",
                                  "code": "mV"}
        assert (Decimal(str(data["period"])), Decimal(str(data["factor"])),
                data["dimensions"]) == (Decimal("3.333333"), Decimal("0.005"), 1)
        # Every sample comes back, in order, as the device's own integers.
        assert data["data"] == " ".join(str(n) for n in recorded.sampled.data)
        item = items[("11524-6", when)]
        assert item["value"] is None and item["sampled"]["data"] == list(recorded.sampled.data)
        assert Decimal(str(item["sampled"]["period"])) == Decimal("3.333333")
        coded = found[("8601-7", when)]["valueCodeableConcept"]["coding"][0]
        assert coded["system"] == SCT and coded["code"] in {c for c, _, _ in
                                                            ecg.RHYTHMS.values()}
    rates = [r for r in resources(run_.bundle) if "valueQuantity" in r]
    assert rates and all(r["valueQuantity"]["code"] == "/min" for r in rates)
    assert all(r["category"][0]["coding"][0]["code"] == "vital-signs" for r in rates)
    # A clinician's system can ask for the recordings alone by their LOINC code.
    with api_client(database_url) as client:
        response = client.get("/fhir/r4/Observation", headers=bearer("20"), params={
            "subject": "Patient/patient-home-test", "code": "http://loinc.org|11524-6"})
    assert response.status_code == 200, response.text
    Bundle.model_validate(response.json())
    assert [e["resource"]["valueSampledData"]["dimensions"] for e in response.json()["entry"]
            ] == [1, 1, 1]
