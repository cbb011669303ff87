"""IEEE 11073-20601 SFLOAT/FLOAT decoding and the simulators' exact encoders."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.errors import DecodeError
from adapters.ieee11073 import (
    MedFloat,
    encode_float,
    encode_sfloat,
    float_from_word,
    read_float,
    read_sfloat,
    sfloat_from_word,
)
from adapters.model import AbsentReason

NAN = MedFloat(None, AbsentReason.NOT_A_NUMBER)
POS_INF = MedFloat(None, AbsentReason.POSITIVE_INFINITY)
NEG_INF = MedFloat(None, AbsentReason.NEGATIVE_INFINITY)
ERROR = MedFloat(None, AbsentReason.ERROR)

# (word, expected str of the Decimal). Sources per block.
SFLOAT_NUMBERS = [
    # HL7/phd input/pagecontent/FLOATS.md, SFLOAT table: precision is kept.
    (0x0002, "2"),
    (0xF014, "2.0"),
    (0xE0C8, "2.00"),
    (0x1002, "20"),
    (0x2002, "200"),
    (0x00C8, "200"),
    (0x04D2, "1234"),
    (0x0B2E, "-1234"),
    # PROTOCOLS.md trap 1: exponent is unbiased two's complement; 98e-8, not 98.
    (0x8062, "9.8E-7"),
    # PROTOCOLS.md §1 useful extremes.
    (0x77FF, "20470000000"),
    (0x7800, "-20480000000"),
    (0x8064, "0.00000100"),
    (0x07FD, "2045"),
    (0x0803, "-2045"),
    # tidepool SFloatTests testCanonicalEncodeUsesFullMantissaRangeAtNegativeExponents
    # (trap 2: 0x800 is only NRes as the whole word, at exponent 0).
    (0xF800, "-204.8"),
    (0xD7FF, "2.047"),
    (0xF7FF, "204.7"),
    # tidepool SFloatTests testIntSFloat / testFloatingPointToSFLoat.
    (0x13E8, "10000"),
    (0x2830, "-200000"),
    (0x612C, "300000000"),
    (0x7E70, "-4000000000"),
    (0xCC18, "-0.1000"),
    (0xB7D0, "0.02000"),
    (0xBED4, "-0.00300"),
    (0xA190, "0.000400"),
    (0xAB32, "-0.001230"),
    (0xA1C8, "0.000456"),
    (0x8CEB, "-0.00000789"),
    (0xF4B5, "120.5"),
    (0xEF83, "-1.25"),
    (0xF003, "0.3"),
]

# PHD IG FLOATS.md special-value table; PROTOCOLS.md §1.
SFLOAT_SPECIALS = [
    (0x07FF, NAN),
    (0x0800, ERROR),
    (0x07FE, POS_INF),
    (0x0802, NEG_INF),
    (0x0801, ERROR),
]
FLOAT_SPECIALS = [
    (0x007FFFFF, NAN),
    (0x00800000, ERROR),
    (0x007FFFFE, POS_INF),
    (0x00800002, NEG_INF),
    (0x00800001, ERROR),
]

FLOAT_NUMBERS = [
    # HL7/phd FLOATS.md, FLOAT table.
    (0x00000002, "2"),
    (0xFF000014, "2.0"),
    (0xFE0000C8, "2.00"),
    (0x01000002, "20"),
    (0x02000002, "200"),
    (0x000000C8, "200"),
    (0x000004D2, "1234"),
    (0x00FFFB2E, "-1234"),
    # Nordic HealthThermometer test vector b0 0e 00 fe (PROTOCOLS.md §2.5): 37.60 degC.
    (0xFE000EB0, "37.60"),
    # Trap 1 for FLOAT: exponent byte 0x80 is -128, unbiased (constructed from the spec).
    (0x80000062, "9.8E-127"),
    # Trap 2 for FLOAT: NRes mantissa at exponent -1 is a number (constructed from the spec).
    (0xFF800000, "-838860.8"),
]


@pytest.mark.parametrize(("word", "text"), SFLOAT_NUMBERS)
def test_sfloat_numbers(word: int, text: str) -> None:
    assert sfloat_from_word(word) == MedFloat(Decimal(text))
    assert str(sfloat_from_word(word).value) == text


@pytest.mark.parametrize(("word", "expected"), SFLOAT_SPECIALS)
def test_sfloat_special_words(word: int, expected: MedFloat) -> None:
    assert sfloat_from_word(word) == expected


@pytest.mark.parametrize(("word", "text"), FLOAT_NUMBERS)
def test_float_numbers(word: int, text: str) -> None:
    assert float_from_word(word) == MedFloat(Decimal(text))
    assert str(float_from_word(word).value) == text


@pytest.mark.parametrize(("word", "expected"), FLOAT_SPECIALS)
def test_float_special_words(word: int, expected: MedFloat) -> None:
    assert float_from_word(word) == expected


def test_sfloat_every_word_matches_reference() -> None:
    # Mirrors tidepool SFloatTests.testSFloatToDouble: all 65536 words, computed independently.
    specials = dict(SFLOAT_SPECIALS)
    for word in range(0x10000):
        exponent = (word >> 12) - 16 if word >> 12 >= 8 else word >> 12
        mantissa = (word & 0xFFF) - 0x1000 if word & 0x800 else word & 0xFFF
        expected = specials.get(word) or MedFloat(Decimal(mantissa) * Decimal(10) ** exponent)
        assert sfloat_from_word(word) == expected, f"0x{word:04X}"


def test_sfloat_every_finite_word_round_trips_through_encoder() -> None:
    for word in range(0x10000):
        decoded = sfloat_from_word(word)
        if decoded.value is None:
            continue
        encoded = encode_sfloat(decoded.value)
        again = sfloat_from_word(int.from_bytes(encoded, "little"))
        assert str(again.value) == str(decoded.value), f"0x{word:04X}"
        if word >> 12 == 0 or word >> 12 >= 8:
            # Exponent <= 0: the Decimal carries mantissa and exponent, so the word is kept.
            assert int.from_bytes(encoded, "little") == word, f"0x{word:04X}"


@settings(database=None, max_examples=500, deadline=None)
@given(st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_float_finite_words_round_trip_through_encoder(word: int) -> None:
    decoded = float_from_word(word)
    if decoded.value is not None:
        again = float_from_word(int.from_bytes(encode_float(decoded.value), "little"))
        assert str(again.value) == str(decoded.value)


def test_read_sfloat_is_little_endian_at_offset() -> None:
    # PHD IG 0xE0C8 ("2.00") on the air as c8 e0, after one leading byte.
    assert read_sfloat(bytes.fromhex("ffc8e0"), 1, "test") == MedFloat(Decimal("2.00"))


def test_read_float_is_little_endian_at_offset() -> None:
    # Nordic HealthThermometer vector: flags 06, then b0 0e 00 fe = 37.60.
    assert read_float(bytes.fromhex("06b00e00fe"), 1, "test") == MedFloat(Decimal("37.60"))


@pytest.mark.parametrize(
    ("data", "offset"), [(b"", 0), (b"\x01", 0), (b"\x01\x02", 1), (b"\x01\x02", -1)]
)
def test_read_sfloat_rejects_truncation(data: bytes, offset: int) -> None:
    with pytest.raises(DecodeError) as caught:
        read_sfloat(data, offset, "ble/test")
    assert caught.value.channel == "ble/test"
    assert caught.value.reason == (
        f"SFLOAT at offset {offset} needs 2 bytes; payload has {len(data)}"
    )


def test_read_float_rejects_truncation() -> None:
    with pytest.raises(DecodeError) as caught:
        read_float(bytes.fromhex("06b00e00"), 1, "ble/2a1c")
    assert str(caught.value) == "ble/2a1c: FLOAT at offset 1 needs 4 bytes; payload has 4"


@pytest.mark.parametrize(
    ("text", "word"),
    [
        # tidepool SFloatTests testCanonicalEncode* vectors.
        ("100", 0x0064),
        ("95", 0x005F),
        ("400", 0x0190),
        ("0", 0x0000),
        ("120.5", 0xF4B5),
        ("-1.25", 0xEF83),
        ("0.3", 0xF003),
        ("-204.8", 0xF800),
        ("2.047", 0xD7FF),
        ("204.7", 0xF7FF),
        # tidepool testIntSFloat: exact values that need a positive exponent.
        ("2045", 0x07FD),
        ("-2045", 0x0803),
        ("10000", 0x13E8),
        ("-200000", 0x2830),
        ("300000000", 0x612C),
        ("-4000000000", 0x7E70),
        ("20470000000", 0x77FF),
        ("-20480000000", 0x7800),
        # PHD IG precision: the Decimal's exponent is kept on the wire.
        ("2.0", 0xF014),
        ("2.00", 0xE0C8),
        # Trap 1 vector, encoded back (PROTOCOLS.md).
        ("9.8E-7", 0x8062),
        # Zero clamps its exponent into range rather than being refused (our choice).
        ("0E-20", 0x8000),
    ],
)
def test_encode_sfloat_picks_exact_words(text: str, word: int) -> None:
    assert encode_sfloat(Decimal(text)) == word.to_bytes(2, "little")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # These would be special words at exponent 0 and have no exact other form
        # (sdk-nrf once sent 2047.0 as 0x07FF = NaN; tidepool's legacy encoder rounds).
        ("2047", "2047 would encode as the SFLOAT special word 0x7FF"),
        ("2046", "2046 would encode as the SFLOAT special word 0x7FE"),
        ("-2046", "-2046 would encode as the SFLOAT special word 0x802"),
        ("-2047", "-2047 would encode as the SFLOAT special word 0x801"),
        ("-2048", "-2048 would encode as the SFLOAT special word 0x800"),
        ("2048", "2048 has no exact SFLOAT form"),
        ("0.12345", "0.12345 has no exact SFLOAT form"),
        ("1E-9", "1E-9 has no exact SFLOAT form"),
        ("1E+20", "1E+20 has no exact SFLOAT form"),
        ("NaN", "NaN is not finite; write the SFLOAT special word explicitly"),
        ("-Infinity", "-Infinity is not finite; write the SFLOAT special word explicitly"),
    ],
)
def test_encode_sfloat_rejects_what_does_not_fit(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        encode_sfloat(Decimal(text))


@pytest.mark.parametrize(
    ("text", "word"),
    [
        # HL7/phd FLOATS.md FLOAT table, encoded back.
        ("2", 0x00000002),
        ("2.0", 0xFF000014),
        ("2.00", 0xFE0000C8),
        ("-1234", 0x00FFFB2E),
        # Nordic HealthThermometer vector (PROTOCOLS.md §2.5).
        ("37.60", 0xFE000EB0),
        # Constructed from the spec: 1e7 exceeds the 24-bit mantissa (max 8388607), so one
        # trailing zero moves into the exponent: 1000000e1.
        ("10000000", 0x010F4240),
    ],
)
def test_encode_float_picks_exact_words(text: str, word: int) -> None:
    assert encode_float(Decimal(text)) == word.to_bytes(4, "little")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("8388607", "8388607 would encode as the FLOAT special word 0x7FFFFF"),
        ("-8388608", "-8388608 would encode as the FLOAT special word 0x800000"),
        ("8388608", "8388608 has no exact FLOAT form"),
        ("Infinity", "Infinity is not finite; write the FLOAT special word explicitly"),
    ],
)
def test_encode_float_rejects_what_does_not_fit(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        encode_float(Decimal(text))


def test_medfloat_needs_exactly_one_of_value_and_absent() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        MedFloat(None)
    with pytest.raises(ValueError, match="exactly one"):
        MedFloat(Decimal(1), AbsentReason.ERROR)
