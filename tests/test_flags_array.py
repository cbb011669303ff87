"""The flags column's binary ``text[]``: what PostgreSQL reads back is what was written."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.adapt import PyFormat, Transformer

from gateway.ingest.flags_array import FlagsDumper, encode

_LISTS = [(), ("implausible",), ("implausible", "trailing_bytes"), ("åäö €", ""), ("a",) * 40]


@pytest.mark.parametrize("flags", [f for f in _LISTS if f])
def test_encoding_matches_psycopgs_own(flags: tuple[str, ...]) -> None:
    dumper = Transformer().get_dumper(["x"], PyFormat.BINARY).upgrade(["x"], PyFormat.BINARY)
    dumped = dumper.dump(list(flags))
    assert dumped is not None
    assert encode(flags) == bytes(dumped)


def test_copy_with_the_dumper_stores_each_list_as_sent(database_url: str) -> None:
    rows = [(i, flags) for i, flags in enumerate(_LISTS * 3)]
    with psycopg.connect(database_url) as conn:
        conn.adapters.register_dumper(None, FlagsDumper)
        conn.execute("CREATE TEMP TABLE flagged (n int, flags text[] NOT NULL)")
        with conn.cursor().copy("COPY flagged (n, flags) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "text[]"])
            for row in rows:
                copy.write_row(row)
        stored = conn.execute("SELECT n, flags FROM flagged ORDER BY n").fetchall()
    assert stored == [(n, list(flags)) for n, flags in rows]
