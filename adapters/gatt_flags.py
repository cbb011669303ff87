"""The length check every flagged GATT characteristic needs: a flags field announces which
optional fields follow, so the payload must be at least the mandatory part plus their sizes
before anything is read (PROTOCOLS.md §7, rule 1)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from adapters.errors import DecodeError

# (flag bit, size in bytes, name used in reject reasons), in wire order.
Field = tuple[int, int, str]


def check_length(payload: bytes, channel: str, *, flags: int, flag_bytes: int, mandatory: int,
                 fields: Sequence[Field], unit: str | None = None) -> int:
    """Raise DecodeError naming the flags when the payload is shorter than they announce;
    return the announced length. ``unit`` is added to the names (e.g. "mmHg", "SI")."""
    needed = _announced(flags, mandatory, tuple(fields))
    if len(payload) < needed:
        names = [name for bit, _, name in fields if flags & bit]
        if unit is not None:
            names.append(unit)
        raise DecodeError(
            channel,
            f"payload is {len(payload)} bytes but flags 0x{flags:0{2 * flag_bytes}x} "
            f"({', '.join(names)}) need {needed}",
        )
    return needed


@lru_cache(maxsize=4096)
def _announced(flags: int, mandatory: int, fields: tuple[Field, ...]) -> int:
    # Every value passes here, and a device sends few flag combinations: sum each once. The
    # bound keeps two-byte flags from any sender from growing the cache without end.
    return mandatory + sum(size for bit, size, _ in fields if flags & bit)
