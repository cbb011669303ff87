"""One contract for every registered adapter: hostile bytes give DecodeError or a valid result.

Never IndexError, struct.error, ValueError or OverflowError: the ingest loop must be able to
reject, count and carry on. A new adapter joins this suite by adding one row to FULL_PAYLOADS.
"""

from __future__ import annotations

import os
import random
import secrets
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import registry
from adapters.errors import DecodeError, UnknownChannelError
from adapters.model import DecodeContext, Event, Observation, Record, dumps
from adapters.registry import ADAPTERS

# A valid payload per channel with every optional field present, so that its prefixes walk
# through every length check.
FULL_PAYLOADS: dict[str, bytes] = {
    # Nordic Android-BLE-Common-Library BloodPressureMeasurementDataCallbackTest _full.
    "ble/2a35": bytes.fromhex("1e8a00580078000000041114293b3c00012700"),
}

CHANNELS = sorted(ADAPTERS)
# A zone west of Greenwich too: a 9999-12-31 evening stamp there overflows datetime in UTC.
CONTEXTS = [
    DecodeContext(zone=ZoneInfo("Europe/Stockholm")),
    DecodeContext(zone=ZoneInfo("America/New_York")),
]


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


def test_every_adapter_has_a_full_sample() -> None:
    assert sorted(FULL_PAYLOADS) == CHANNELS


@pytest.mark.parametrize("channel", CHANNELS)
def test_full_sample_decodes(channel: str) -> None:
    assert decode_or_reject(channel, FULL_PAYLOADS[channel], CONTEXTS[0])


@pytest.mark.parametrize("channel", CHANNELS)
def test_empty_payload_is_rejected(channel: str) -> None:
    with pytest.raises(DecodeError) as caught:
        ADAPTERS[channel](b"", CONTEXTS[0])
    assert caught.value.channel == channel


@pytest.mark.parametrize("channel", CHANNELS)
def test_every_prefix_is_rejected_or_valid(channel: str) -> None:
    full = FULL_PAYLOADS[channel]
    for size in range(len(full) + 1):
        decode_or_reject(channel, full[:size], CONTEXTS[0])


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("tail", [b"\x00", b"\xff" * 7, bytes(range(256)) * 4])
def test_oversized_payload_is_rejected_or_valid(channel: str, tail: bytes) -> None:
    decode_or_reject(channel, FULL_PAYLOADS[channel] + tail, CONTEXTS[0])


@pytest.mark.parametrize("channel", CHANNELS)
@settings(database=None, max_examples=400, deadline=None)
@given(payload=st.binary(max_size=64), zone_index=st.integers(0, len(CONTEXTS) - 1))
def test_random_bytes_are_rejected_or_valid(channel: str, payload: bytes, zone_index: int) -> None:
    decode_or_reject(channel, payload, CONTEXTS[zone_index])


@pytest.mark.parametrize("channel", CHANNELS)
def test_mutated_full_sample_is_rejected_or_valid(channel: str) -> None:
    # Random bytes rarely pass the length checks; mutating a valid sample reaches the field
    # decoders. The seed is printed (shown on failure) and can be replayed via the variable.
    seed = int(os.environ.get("AIDLINK_FUZZ_SEED") or secrets.randbits(32))
    print(f"fuzz seed {seed}; replay with AIDLINK_FUZZ_SEED={seed}")
    rng = random.Random(seed)
    full = FULL_PAYLOADS[channel]
    for _ in range(3000):
        payload = bytearray(full)
        for _ in range(rng.randint(1, 4)):
            payload[rng.randrange(len(payload))] = rng.randrange(256)
        cut = rng.randint(0, len(payload) + 4)
        mutated = bytes(payload[:cut]) + bytes(
            rng.randrange(256) for _ in range(cut - len(payload))
        )
        decode_or_reject(channel, mutated, rng.choice(CONTEXTS))


def test_registry_decode_uses_the_channel_adapter_and_default_context() -> None:
    payload = FULL_PAYLOADS["ble/2a35"]
    assert registry.decode("ble/2a35", payload) == ADAPTERS["ble/2a35"](payload, DecodeContext())


def test_registry_decode_unknown_channel() -> None:
    with pytest.raises(UnknownChannelError) as caught:
        registry.decode("ble/ffff", b"\x00")
    assert caught.value.channel == "ble/ffff"
    assert str(caught.value) == "no adapter for channel 'ble/ffff'"
