"""One contract for every registered adapter: hostile bytes give DecodeError or a valid result.

Never IndexError, struct.error, ValueError or OverflowError: the ingest loop must be able to
reject, count and carry on. A new adapter joins this suite by adding one row to SAMPLES, whose
first payload carries every optional field so that its prefixes walk through every length check.

The fuzz tests draw from one seed per run, printed (shown on failure) and replayable with
AIDLINK_FUZZ_SEED=<seed>; each adapter gets FUZZ_CASES seeded random and mutated inputs.
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import registry
from adapters.errors import DecodeError, UnknownChannelError
from adapters.model import DecodeContext, Event, Observation, Record, dumps
from adapters.registry import ADAPTERS

SAMPLES: dict[str, list[bytes]] = {
    # Nordic Android-BLE-Common-Library BloodPressureMeasurementDataCallbackTest _full.
    "ble/2a35": [bytes.fromhex("1e8a00580078000000041114293b3c00012700")],
    # Nordic IntermediateCuffPressureDataCallbackTest _full, _some, _minimal.
    "ble/2a36": [
        bytes.fromhex("1e0400000000000000041114293b3c00012700"),
        bytes.fromhex("156ff0000000003c001200"),
        bytes.fromhex("00d7f000000000"),
    ],
    # RonanB96 test_weight_measurement.py: full imperial, then basic SI and with time stamp.
    "ble/2a9d": [
        bytes.fromhex("1f543de7070c190e1e2d03f500a802"),
        bytes.fromhex("00b036"),
        bytes.fromhex("02b036e7070c190e1e2d"),
    ],
    # Constructed from body_composition_measurement.xml: flags 0x1ffe, every field (SI).
    "ble/2a9c": [
        bytes.fromhex("fe1ffd00e8070506081e0001581b920170175c2ba028401f55140c3ae506"),
        bytes.fromhex("0000fd00"),
    ],
    # StanfordSpezi PLXTests: spot-check with every field; continuous full and simple.
    "ble/2a5e": [bytes.fromhex("0facf3bef5e8070b1d170839204022000066e3")],
    "ble/2a5f": [
        bytes.fromhex("1fdef3caf3caf35af5d4f3b2f220010000007ae3"),
        bytes.fromhex("1c5f005a00200000000057f0"),
    ],
    # Nordic GlucoseMeasurementDataCallbackTest; JDRF GlucoseMeasurementCharacteristicTest.
    "ble/2a18": [
        bytes.fromhex("1b0100e307021b0b0a1efbff1e00120501"),
        bytes.fromhex("130100e20706060e350e000054b019"),
    ],
    # Nordic GlucoseMeasurementContextDataCallbackTest _full layout (flags 0xff) with its values
    # as our encoder writes them; JDRF GlucoseMeasurementContextCharacteristicTest packet 5.
    "ble/2a34": [
        bytes.fromhex("ff0000b30364d004123c0032047bd059f1"),
        bytes.fromhex("d70a00e90475d00451051da00700"),
    ],
    # Nordic TemperatureMeasurementDataCallbackTest.
    "ble/2a1c": [bytes.fromhex("06b00e00fedc070c050b321b04")],
    # Nordic BatteryLevelDataCallbackTest and DateTimeDataCallbackTest.
    "ble/2a19": [bytes.fromhex("64"), bytes.fromhex("0f")],
    "ble/2a08": [bytes.fromhex("e20704110f3300"), bytes.fromhex("00000000121a20")],
    # Our own versioned JSON documents (docs/DEVICE_DOCUMENTS.md), every optional field first.
    "spirometer": [
        b'{"v":1,"type":"spirometry","at":"2024-05-02T08:15:00+02:00","seq":118,'
        b'"fev1":{"value":2.85,"unit":"L"},"fvc":{"value":3.62,"unit":"L"},'
        b'"pef":{"value":412,"unit":"L/min"},"quality":"A","manoeuvres":3}',
        b'{"v":1,"type":"peak_flow","at":"2024-05-02T20:05:00+02:00",'
        b'"pef":{"value":385,"unit":"L/min"}}',
    ],
    "dispenser": [
        b'{"v":1,"type":"dose_taken","at":"2024-05-02T08:12:40+02:00","seq":9030,'
        b'"dose":{"id":"D-20240502-0800","scheduled_at":"2024-05-02T08:00:00+02:00",'
        b'"compartment":14},"remaining_doses":12,"confirmation":"button","battery_percent":100}',
    ],
    "lock": [
        b'{"v":1,"type":"failed_attempt","at":"2024-05-02T07:02:11+02:00","seq":552,'
        b'"method":"key","credential":"KEY-REVOKED-12","attempts":3,"battery_percent":64}',
    ],
    "status": [
        b'{"v":1,"type":"device_status","at":"2024-05-02T03:00:00+02:00","seq":88,'
        b'"battery_percent":76,"rssi_dbm":-71,"firmware":"2.4.1-se","uptime_s":1209600,'
        b'"clock":{"synced":true,"source":"ntp"}}',
    ],
    "wipe": [
        b'{"v":1,"type":"wipe_done","at":"2026-11-20T10:15:00+01:00","seq":7,'
        b'"nonce":"9f2c4e1ab37d5a60"}',
    ],
    # Issue 8 home-test documents (docs/DEVICE_DOCUMENTS.md §8-), every optional field first.
    "calprotectin": [
        b'{"v":1,"type":"calprotectin","at":"2024-05-02T08:15:00+02:00","seq":41,'
        b'"calprotectin":{"value":30,"unit":"ug/g","comparator":"<"},"lot":"L2405"}',
        b'{"v":1,"type":"test_invalid","at":"2024-05-02T08:15:00Z","reason":"expired"}',
    ],
    "tonometer": [
        b'{"v":1,"type":"iop","at":"2024-05-02T07:40:00+02:00","seq":12,"right":{"value":17,'
        b'"unit":"mm[Hg]","comparator":"<","quality":"high"},"left":{"value":21,'
        b'"unit":"mm[Hg]","quality":"low"},"position":"supine"}',
    ],
    "urinalysis": [
        b'{"v":1,"type":"urinalysis","at":"2024-05-02T07:05:00+02:00","seq":5,'
        b'"strip":"Combur-7","results":{"glucose":"negative","protein":"trace","blood":"1+",'
        b'"leukocytes":"2+","nitrite":"positive","ketones":"3+","bilirubin":"4+","ph":6.0,'
        b'"specific_gravity":1.015}}',
    ],
    "night_supervision": [
        b'{"v":1,"type":"not_in_bed","at":"2024-05-03T00:34:10+02:00","seq":77,"check":'
        b'{"id":"C-20240503-0030","scheduled_at":"2024-05-03T00:30:00+02:00"},'
        b'"method":"camera","credential":"staff-0421","room":"bedroom"}',
    ],
    # One-lead ECG: a short recording with every optional field, and a too-noisy one.
    "ecg": [
        b'{"v":1,"type":"ecg","at":"2024-05-02T08:15:00+02:00","seq":7,"lead":"I",'
        b'"sampling_frequency":300,"uv_per_count":5,"samples":[2,1,24,-18,200,-44,3,8],'
        b'"rhythm":"atrial_fibrillation","heart_rate":{"value":96,"unit":"/min"}}',
        b'{"v":1,"type":"ecg","at":"2024-05-02T08:15:00Z","lead":"I","sampling_frequency":512,'
        b'"uv_per_count":2.5,"samples":[-32768,32767],"rhythm":"too_noisy"}',
    ],
    # SCAIP <mrq>: a mobile alarm with GPS (every optional element), and a padded fixed trigger.
    "scaip": [
        b"<mrq><ref>5F3A00000017</ref><ver>01.00</ver><mty>ME</mty><cid>8031372</cid>"
        b"<dty>0051</dty><did>01</did><dco>002</dco><stc>0010</stc><pri>0</pri><lco>035</lco>"
        b"<crd>gsm:+46701740605</crd><cha>0</cha><lge><geo>60.6065,15.6355</geo>"
        b"<tim>2024-05-02T08:15:00+02</tim></lge></mrq>",
        b"<mrq><ref>803137200003</ref><mty>ME</mty><cid> 8031372</cid><dty>0004</dty>"
        b"<stc>0010</stc><crd>gsm:+</crd></mrq>",
    ],
    # SIA DC-09 frames from simulators/dc09.py (CRC and length computed): SIA DCS medical
    # alarm with receiver and prefix, and Contact ID personal emergency.
    "dc09": [
        b'\n760A004A"SIA-DCS"0012R579BDFL789ABC#1234AB[#1234AB|Nri1/MA001]_10:00:00,11-22-2026\r',
        b'\n1F0A003F"ADM-CID"0013L0#1234AB[#1234AB|1101 00 001]_10:00:00,11-22-2026\r',
    ],
}

CHANNELS = sorted(ADAPTERS)
# A zone west of Greenwich too: a 9999-12-31 evening stamp there overflows datetime in UTC.
CONTEXTS = [
    DecodeContext(zone=ZoneInfo("Europe/Stockholm")),
    DecodeContext(zone=ZoneInfo("America/New_York")),
]
FUZZ_SEED = int(os.environ.get("AIDLINK_FUZZ_SEED") or secrets.randbits(32))
FUZZ_CASES = 10_000


def decode_or_reject(channel: str, payload: bytes, ctx: DecodeContext) -> list[Record] | None:
    """Decode; None for a clean DecodeError. Any other exception fails the calling test."""
    try:
        records = ADAPTERS[channel](payload, ctx)
    except DecodeError as error:
        assert error.channel == channel
        assert error.reason
        assert "\n" not in error.reason
        return None
    assert isinstance(records, list)
    for record in records:
        assert isinstance(record, Observation | Event)
        # Serialisable: no non-finite Decimal, no naive datetime slipped through.
        dumps(record.to_json())
    return records


def test_every_adapter_has_samples() -> None:
    assert sorted(SAMPLES) == CHANNELS


@pytest.mark.parametrize("channel", CHANNELS)
def test_samples_decode(channel: str) -> None:
    for payload in SAMPLES[channel]:
        assert decode_or_reject(channel, payload, CONTEXTS[0])


@pytest.mark.parametrize("channel", CHANNELS)
def test_empty_payload_is_rejected(channel: str) -> None:
    with pytest.raises(DecodeError) as caught:
        ADAPTERS[channel](b"", CONTEXTS[0])
    assert caught.value.channel == channel


@pytest.mark.parametrize("channel", CHANNELS)
def test_every_truncation_is_rejected(channel: str) -> None:
    # The first sample carries every optional field, so any cut leaves a field short.
    full = SAMPLES[channel][0]
    for size in range(len(full)):
        with pytest.raises(DecodeError) as caught:
            ADAPTERS[channel](full[:size], CONTEXTS[0])
        assert caught.value.channel == channel
        assert "\n" not in caught.value.reason


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("tail", [b"\x00", b"\xff" * 7, bytes(range(256)) * 4])
def test_oversized_payload_is_rejected_or_valid(channel: str, tail: bytes) -> None:
    for payload in SAMPLES[channel]:
        decode_or_reject(channel, payload + tail, CONTEXTS[0])


@pytest.mark.parametrize("channel", CHANNELS)
@settings(database=None, max_examples=400, deadline=None)
@given(payload=st.binary(max_size=64), zone_index=st.integers(0, len(CONTEXTS) - 1))
def test_random_bytes_are_rejected_or_valid(channel: str, payload: bytes, zone_index: int) -> None:
    decode_or_reject(channel, payload, CONTEXTS[zone_index])


def fuzz_inputs(rng: random.Random, samples: list[bytes], count: int) -> Iterator[bytes]:
    """Random and mutated payloads: random bytes rarely pass the length checks, mutants do.

    Four strategies in turn: flip bits in the flags (first two bytes), overwrite 1-4 bytes,
    cut or extend, and fresh random bytes behind a sample's first byte.
    """
    for index in range(count):
        payload = bytearray(rng.choice(samples))
        strategy = index % 4
        if strategy == 0:
            for position in range(min(2, len(payload))):
                payload[position] ^= rng.randrange(256)
        elif strategy == 1:
            for _ in range(rng.randint(1, 4)):
                payload[rng.randrange(len(payload))] = rng.randrange(256)
        elif strategy == 2:
            cut = rng.randint(0, len(payload) + 8)
            payload = payload[:cut] + bytearray(rng.randbytes(max(0, cut - len(payload))))
        else:
            payload = payload[:1] + bytearray(rng.randbytes(rng.randint(0, 40)))
        yield bytes(payload)


@pytest.mark.parametrize("channel", CHANNELS)
def test_fuzzed_inputs_are_rejected_or_valid(channel: str) -> None:
    print(f"fuzz seed {FUZZ_SEED}; replay with AIDLINK_FUZZ_SEED={FUZZ_SEED}")
    rng = random.Random(f"{FUZZ_SEED}:{channel}")
    accepted = 0
    for payload in fuzz_inputs(rng, SAMPLES[channel], FUZZ_CASES):
        if decode_or_reject(channel, payload, rng.choice(CONTEXTS)) is not None:
            accepted += 1
    # Some mutants must get through, or the fuzz only ever exercised the length checks.
    assert accepted > 0


def test_registry_decode_uses_the_channel_adapter_and_default_context() -> None:
    payload = SAMPLES["ble/2a35"][0]
    assert registry.decode("ble/2a35", payload) == ADAPTERS["ble/2a35"](payload, DecodeContext())


def test_registry_decode_unknown_channel() -> None:
    with pytest.raises(UnknownChannelError) as caught:
        registry.decode("ble/ffff", b"\x00")
    assert caught.value.channel == "ble/ffff"
    assert str(caught.value) == "no adapter for channel 'ble/ffff'"


def test_dumps_utc_writes_what_dumps_writes_for_utc_datetimes() -> None:
    from adapters.model import dumps_utc

    value = {"at": [datetime(2026, 11, 1, 8, 0, tzinfo=UTC),
                    datetime(2026, 11, 1, 8, 0, 0, 500, tzinfo=UTC)],
             "n": [Decimal("2.00"), Decimal("-0.5"), Decimal("1E+2")]}
    assert dumps_utc(value) == dumps(value).encode()
    assert dumps_utc(value) == (b'{"at":["2026-11-01T08:00:00Z","2026-11-01T08:00:00.000500Z"],'
                                b'"n":[2.00,-0.5,1E+2]}')
    with pytest.raises(ValueError, match="non-finite"):
        dumps_utc({"n": Decimal("NaN")})
