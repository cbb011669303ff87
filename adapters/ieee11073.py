"""IEEE 11073-20601 SFLOAT (16-bit) and FLOAT (32-bit) numbers, as carried by BLE health profiles.

Wire layout (PROTOCOLS.md §1; HL7 PHD IG FLOATS.md), little-endian on the air:

* SFLOAT: bits 15-12 exponent (int4), bits 11-0 mantissa (int12);
* FLOAT: bits 31-24 exponent (int8), bits 23-0 mantissa (int24);

both two's complement and **unbiased** (trap 1: ``0x8062`` is 98e-8, not 98). The value is
mantissa * 10**exponent. A handful of words are special values, and they match only the whole
word (trap 2: ``0xF800`` is the number -204.8, not NRes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Context, Decimal

from adapters.errors import DecodeError
from adapters.model import AbsentReason

# Special words -> FHIR data-absent-reason (PHD IG: NRes and RFU both map to "error").
SFLOAT_SPECIALS: Mapping[int, AbsentReason] = {
    0x07FF: AbsentReason.NOT_A_NUMBER,
    0x0800: AbsentReason.ERROR,  # NRes: not at this resolution
    0x07FE: AbsentReason.POSITIVE_INFINITY,
    0x0802: AbsentReason.NEGATIVE_INFINITY,
    0x0801: AbsentReason.ERROR,  # reserved for future use
}
FLOAT_SPECIALS: Mapping[int, AbsentReason] = {
    0x007FFFFF: AbsentReason.NOT_A_NUMBER,
    0x00800000: AbsentReason.ERROR,  # NRes
    0x007FFFFE: AbsentReason.POSITIVE_INFINITY,
    0x00800002: AbsentReason.NEGATIVE_INFINITY,
    0x00800001: AbsentReason.ERROR,  # reserved for future use
}

# A private context so that a caller who changed the thread's decimal context (precision,
# traps) cannot make decoding round; at most 8 significant digits ever pass through it.
_EXACT = Context(prec=28, Emin=-999_999, Emax=999_999)


@dataclass(frozen=True, slots=True)
class _Format:
    """Bit widths and special words of one of the two number formats."""

    name: str
    size: int
    mantissa_bits: int
    exponent_bits: int
    specials: Mapping[int, AbsentReason]

    @property
    def mantissa_range(self) -> range:
        half = 1 << (self.mantissa_bits - 1)
        return range(-half, half)

    @property
    def exponent_range(self) -> range:
        half = 1 << (self.exponent_bits - 1)
        return range(-half, half)


_SFLOAT = _Format("SFLOAT", 2, 12, 4, SFLOAT_SPECIALS)
_FLOAT = _Format("FLOAT", 4, 24, 8, FLOAT_SPECIALS)


@dataclass(frozen=True, slots=True)
class MedFloat:
    """A decoded SFLOAT/FLOAT: a Decimal value, or the reason there is none."""

    value: Decimal | None
    absent: AbsentReason | None = None

    def __post_init__(self) -> None:
        if (self.value is None) == (self.absent is None):
            raise ValueError("MedFloat needs exactly one of value and absent")


def _signed(raw: int, bits: int) -> int:
    return raw - (1 << bits) if raw & (1 << (bits - 1)) else raw


def _from_word(word: int, fmt: _Format) -> MedFloat:
    special = fmt.specials.get(word)
    if special is not None:
        return MedFloat(None, special)
    mantissa = _signed(word & ((1 << fmt.mantissa_bits) - 1), fmt.mantissa_bits)
    exponent = _signed(word >> fmt.mantissa_bits, fmt.exponent_bits)
    if exponent > 0:
        # The PHD IG writes 0x1002 as "20", not "2E+1": positive exponents give an integer.
        return MedFloat(Decimal(mantissa * 10**exponent))
    # scaleb keeps the exponent, so 0xE0C8 stays "2.00" (PHD IG precision rule).
    return MedFloat(Decimal(mantissa).scaleb(exponent, _EXACT))


# Every SFLOAT word decodes the same way every time, and MedFloat is immutable: decode each of
# the 65,536 words once and reuse it (the hot path of every GATT adapter).
_SFLOAT_CACHE: dict[int, MedFloat] = {}


def sfloat_from_word(word: int) -> MedFloat:
    """Decode a 16-bit SFLOAT word (already assembled from its little-endian bytes)."""
    word &= 0xFFFF
    cached = _SFLOAT_CACHE.get(word)
    if cached is None:
        cached = _SFLOAT_CACHE[word] = _from_word(word, _SFLOAT)
    return cached


def float_from_word(word: int) -> MedFloat:
    """Decode a 32-bit FLOAT word (already assembled from its little-endian bytes)."""
    return _from_word(word & 0xFFFFFFFF, _FLOAT)


def _read(data: bytes, offset: int, channel: str, fmt: _Format) -> MedFloat:
    end = offset + fmt.size
    if offset < 0 or end > len(data):
        raise DecodeError(
            channel,
            f"{fmt.name} at offset {offset} needs {fmt.size} bytes; payload has {len(data)}",
        )
    return _from_word(int.from_bytes(data[offset:end], "little"), fmt)


def read_sfloat(data: bytes, offset: int, channel: str) -> MedFloat:
    """Read a little-endian SFLOAT at ``offset``; DecodeError naming ``channel`` if truncated."""
    if offset < 0 or offset + 2 > len(data):
        raise DecodeError(
            channel, f"SFLOAT at offset {offset} needs 2 bytes; payload has {len(data)}")
    return sfloat_from_word(data[offset] | data[offset + 1] << 8)


def read_float(data: bytes, offset: int, channel: str) -> MedFloat:
    """Read a little-endian FLOAT at ``offset``; DecodeError naming ``channel`` if truncated."""
    return _read(data, offset, channel, _FLOAT)


def _encode(value: Decimal, fmt: _Format) -> bytes:
    sign, digits, tuple_exponent = value.as_tuple()
    if not isinstance(tuple_exponent, int):  # NaN and Infinity carry a letter here
        raise ValueError(f"{value} is not finite; write the {fmt.name} special word explicitly")
    exponent = tuple_exponent
    mantissa = int("".join(map(str, digits))) * (-1 if sign else 1)
    mantissas, exponents = fmt.mantissa_range, fmt.exponent_range
    if mantissa == 0:
        # Zero fits at any exponent; clamp so 0E-20 is sent as 0e-8, not refused.
        exponent = min(max(exponent, exponents.start), exponents[-1])
    # Start from the Decimal's own exponent so "2.00" is sent as 200e-2. Only move it when
    # the pair does not fit, and only by steps that keep the value exact: drop a trailing
    # zero (coarser), or append one when the exponent is too large (finer).
    while (mantissa not in mantissas or exponent < exponents.start) and (
        mantissa % 10 == 0 and exponent < exponents[-1]
    ):
        mantissa //= 10
        exponent += 1
    while exponent > exponents[-1] and mantissa * 10 in mantissas:
        mantissa *= 10
        exponent -= 1
    if mantissa not in mantissas or exponent not in exponents:
        raise ValueError(f"{value} has no exact {fmt.name} form")
    mask = (1 << fmt.mantissa_bits) - 1
    word = ((exponent & ((1 << fmt.exponent_bits) - 1)) << fmt.mantissa_bits) | (mantissa & mask)
    if word in fmt.specials:
        # Exponent 0 with mantissa 2046/2047/-2046/-2047/-2048 (or the FLOAT equivalents)
        # would read back as NaN/NRes/INF; sdk-nrf once sent 2047.0 as NaN this way.
        raise ValueError(f"{value} would encode as the {fmt.name} special word 0x{word:X}")
    return word.to_bytes(fmt.size, "little")


def encode_sfloat(value: Decimal) -> bytes:
    """Encode ``value`` exactly as a little-endian SFLOAT; ValueError if it does not fit."""
    return _encode(value, _SFLOAT)


def encode_float(value: Decimal) -> bytes:
    """Encode ``value`` exactly as a little-endian FLOAT; ValueError if it does not fit."""
    return _encode(value, _FLOAT)
