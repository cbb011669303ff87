"""The observations' ``flags`` column (``text[]``) in COPY's binary format, each list once.

psycopg encodes a list for a ``text[]`` column in Python, element by element, for every row;
at four rows a message that was a few per cent of the gateway's time. A batch holds only a
handful of distinct flag lists (most rows have none), so each is encoded once per connection
and the bytes reused.

Wire layout (PostgreSQL's ``array_send``), all integers 4 bytes big-endian:

    ndim, has_null (0 or 1), element type oid (25, text)
    per dimension: its length, its lower bound (1)
    per element: its byte length (-1 for NULL), then its UTF-8 bytes
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from psycopg import postgres, pq
from psycopg.adapt import Dumper

__all__ = ["FlagsDumper", "encode"]

_TEXT_OID = postgres.types["text"].oid
_TEXT_ARRAY_OID = postgres.types["text"].array_oid
# Distinct flag lists kept per connection; adapters set at most a few flags from a fixed set,
# so this is never reached in practice, and only bounds a misbehaving adapter.
_KEPT = 4096


def encode(flags: Sequence[str]) -> bytes:
    """A one-dimensional ``text[]`` without NULLs, as ``array_send`` writes it."""
    if not flags:
        return struct.pack("!iiI", 0, 0, _TEXT_OID)
    parts = [struct.pack("!iiIii", 1, 0, _TEXT_OID, len(flags), 1)]
    for flag in flags:
        data = flag.encode()
        parts.append(struct.pack("!i", len(data)))
        parts.append(data)
    return b"".join(parts)


class FlagsDumper(Dumper):
    """Binary ``text[]`` from any sequence of strings, for COPY with ``set_types``: register
    with ``register_dumper(None, FlagsDumper)`` so only a lookup by type oid finds it."""

    format = pq.Format.BINARY
    oid = _TEXT_ARRAY_OID

    def __init__(self, cls: type, context: Any = None) -> None:
        super().__init__(cls, context)
        self._encoded: dict[tuple[str, ...], bytes] = {}

    def dump(self, obj: Sequence[str]) -> bytes:
        key = tuple(obj)
        found = self._encoded.get(key)
        if found is None:
            found = encode(key)
            if len(self._encoded) < _KEPT:
                self._encoded[key] = found
        return found
