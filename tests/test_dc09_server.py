"""The DC-09 receiver over real TCP on 127.0.0.1, driven by the alarm-unit simulator.

``submit`` is a seam we own, so a recording fake stands in for the gateway's store; each test
runs its own event loop with ``asyncio.run`` and closes every socket it opens.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.dc09 import Header, build_ack, build_nak, decode
from adapters.model import DecodeContext, Event
from gateway.dc09_server import Dc09Server, split_frames
from simulators.dc09 import AlarmUnit, Delivery, Fault, encode_frame

NOW = datetime(2025, 3, 4, 10, 0, 0, tzinfo=UTC)
ACCOUNTS = {"1234": "client-1"}
HOST = "127.0.0.1"


def clock() -> datetime:
    return NOW


class Recorder:
    """The gateway seam: records each submit and answers with a preset result (None: never)."""

    def __init__(self, result: bool | BaseException | None = True) -> None:
        self.result = result
        self.calls: list[tuple[str, bytes]] = []
        self.pending: list[concurrent.futures.Future[bool]] = []

    def __call__(self, client_id: str, frame: bytes) -> concurrent.futures.Future[bool]:
        self.calls.append((client_id, frame))
        future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        if isinstance(self.result, BaseException):
            future.set_exception(self.result)
        elif self.result is not None:
            future.set_result(self.result)
        self.pending.append(future)
        return future


def frame(sequence: int, data: str = "#1234|Nri1/QA001", message_id: str = "SIA-DCS") -> bytes:
    return encode_frame(message_id, sequence, "1234", data, timestamp=NOW)


def header(sequence: int, message_id: str = "SIA-DCS") -> Header:
    return Header(message_id, False, f"{sequence:04d}", None, "0", "1234")


@asynccontextmanager
async def receiver(submit: Any, **options: Any) -> AsyncIterator[tuple[Dc09Server, int]]:
    accounts = options.pop("account_client", ACCOUNTS.get)
    server = Dc09Server(HOST, 0, account_client=accounts, submit=submit, clock=clock, **options)
    port = await server.start()
    try:
        yield server, port
    finally:
        await server.stop()


@asynccontextmanager
async def connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


async def reply(reader: asyncio.StreamReader, timeout: float = 2.0) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r"), timeout)


def unit(port: int, account: str = "1234", attempts: int = 1) -> AlarmUnit:
    return AlarmUnit(HOST, port, account=account, attempts=attempts, reply_timeout=0.3,
                     clock=clock)


async def deliver(
    submit: Any, send: Callable[[AlarmUnit], Awaitable[Delivery]], **options: Any
) -> tuple[Delivery, Counter[str]]:
    async with receiver(submit, **options) as (server, port):
        return await send(unit(port, attempts=2)), server.counts


def test_ack_after_submit_resolves_true() -> None:
    store = Recorder(True)
    delivery, counts = asyncio.run(deliver(store, lambda u: u.send_sia("QA", "001", "1")))
    assert (delivery, counts) == (Delivery(1, ("ACK",)), Counter(stored=1))
    assert store.calls == [("client-1", frame(1))]
    assert decode(store.calls[0][1], DecodeContext()) == [Event("alarm.personal_emergency", NOW, {
        "account": "1234", "receiver": None, "prefix": "0", "sequence": "0001",
        "protocol": "SIA-DCS", "raw": "#1234|Nri1/QA001", "code": "QA", "qualifier": "new",
        "zone": "001", "group": "1"})]


def test_ack_waits_for_the_commit() -> None:
    async def scenario() -> None:
        store = Recorder(None)
        async with receiver(store) as (_, port), connection(port) as (reader, writer):
            writer.write(frame(1))
            with pytest.raises(TimeoutError):
                await reply(reader, timeout=0.3)
            store.pending[0].set_result(True)
            assert await reply(reader) == build_ack(header(1))

    asyncio.run(scenario())


@pytest.mark.parametrize(("result", "replies", "counts"), [
    (False, ("NAK", "NAK"), Counter(not_stored=2)),
    (RuntimeError("database down"), ("NAK", "NAK"), Counter(not_stored=2)),
    (None, ("NAK", "NAK"), Counter(not_stored=2)),
])
def test_nak_unless_the_store_confirms(result: Any, replies: tuple[str, ...],
                                       counts: Counter[str]) -> None:
    store = Recorder(result)
    delivery, got = asyncio.run(
        deliver(store, lambda u: u.send_cid(1, 100, 3), submit_timeout=0.1))
    assert (delivery, got) == (Delivery(1, replies), counts)
    # The retry resends the same sequence number.
    expected = encode_frame("ADM-CID", 1, "1234", "#1234|1100 00 003", timestamp=NOW)
    assert store.calls == [("client-1", expected)] * 2


def test_an_async_submit_is_awaited() -> None:
    calls: list[str] = []

    async def store(client_id: str, raw: bytes) -> bool:
        calls.append(client_id)
        return True

    delivery, counts = asyncio.run(deliver(store, lambda u: u.send_sia("MA", "002")))
    assert (delivery, counts, calls) == (Delivery(1, ("ACK",)), Counter(stored=1), ["client-1"])


@pytest.mark.parametrize(("faults", "replies", "counts", "stored"), [
    ([Fault.BAD_CRC], ("timeout", "ACK"), Counter(crc=1, stored=1), 1),
    ([Fault.STALE_TIMESTAMP] * 2, ("NAK", "NAK"), Counter(timestamp=2), 0),
    ([Fault.WRONG_LENGTH], ("DUH",), Counter(length=1), 0),
])
def test_faulty_frames(faults: list[Fault], replies: tuple[str, ...], counts: Counter[str],
                       stored: int) -> None:
    store = Recorder(True)
    delivery, got = asyncio.run(deliver(store, lambda u: u.send_sia("FA", "", faults=faults)))
    assert (delivery, got, len(store.calls)) == (Delivery(1, replies), counts, stored)


def test_link_test_is_acked_without_a_store() -> None:
    store = Recorder(True)
    delivery, counts = asyncio.run(deliver(store, lambda u: u.link_test()))
    assert (delivery, counts, store.calls) == (Delivery(1, ("ACK",)), Counter(link_test=1), [])


def test_unknown_account_gets_duh() -> None:
    async def scenario() -> tuple[Delivery, Counter[str]]:
        async with receiver(Recorder(True)) as (server, port):
            return await unit(port, account="9999").send_sia("MA"), server.counts

    assert asyncio.run(scenario()) == (Delivery(1, ("DUH",)), Counter(unknown_account=1))


def test_failed_account_lookup_gets_nak() -> None:
    def lookup(account: str) -> str | None:
        raise ConnectionError("registry unreachable")

    delivery, counts = asyncio.run(
        deliver(Recorder(True), lambda u: u.send_sia("MA"), account_client=lookup))
    assert (delivery, counts) == (Delivery(1, ("NAK", "NAK")), Counter(account_lookup_failed=2))


def test_split_and_coalesced_frames() -> None:
    async def scenario() -> list[bytes]:
        async with receiver(Recorder(True)) as (_, port), connection(port) as (reader, writer):
            whole = frame(1)
            for piece in (whole[:5], whole[5:30], whole[30:]):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.05)
            got = [await reply(reader)]
            null = encode_frame("NULL", 3, "1234", "", timestamp=NOW)
            writer.write(b"noise" + frame(2) + null + b"\n" + frame(4)[1:])
            return got + [await reply(reader) for _ in range(3)]

    assert asyncio.run(scenario()) == [
        build_ack(header(1)), build_ack(header(2)), build_ack(header(3, "NULL")),
        build_ack(header(4))]


@pytest.mark.parametrize("flood", [b"x" * 2000, b"\n" + b"A" * 1100, b"\nAB\r" * 400])
def test_floods_close_the_connection(flood: bytes) -> None:
    async def scenario() -> tuple[bytes, Counter[str]]:
        async with receiver(Recorder(True)) as (server, port), connection(port) as (r, w):
            w.write(flood)
            got = await asyncio.wait_for(r.read(), 2)
            return got, server.counts

    got, counts = asyncio.run(scenario())
    assert got == b""
    assert counts["flood"] == 1


def test_idle_connections_are_closed() -> None:
    async def scenario() -> tuple[bytes, Counter[str]]:
        async with (
            receiver(Recorder(True), idle_timeout=0.2) as (server, port),
            connection(port) as (reader, _),
        ):
            return await asyncio.wait_for(reader.read(), 2), server.counts

    assert asyncio.run(scenario()) == (b"", Counter(idle_timeout=1))


def test_connection_limit_and_clean_stop() -> None:
    async def scenario() -> tuple[bytes, bytes, Counter[str]]:
        store = Recorder(None)
        server = Dc09Server(HOST, 0, account_client=ACCOUNTS.get, submit=store, clock=clock,
                            max_connections=1)
        port = await server.start()
        async with connection(port) as (first, writer), connection(port) as (second, _):
            refused = await asyncio.wait_for(second.read(), 2)
            writer.write(frame(1))  # left waiting on a commit that never comes
            await asyncio.sleep(0.1)
            await server.stop()
            return refused, await asyncio.wait_for(first.read(), 2), server.counts

    assert asyncio.run(scenario()) == (b"", b"", Counter(too_many_connections=1))


def test_options_are_validated() -> None:
    for options in ({"window": (-1, 20)}, {"idle_timeout": 0}, {"max_frame": 10}):
        with pytest.raises(ValueError, match="DC-09 receiver"):
            Dc09Server(HOST, 0, account_client=ACCOUNTS.get, submit=Recorder(), **options)
    with pytest.raises(ValueError, match="port 70000"):
        Dc09Server(HOST, 70000, account_client=ACCOUNTS.get, submit=Recorder())

    async def twice() -> None:
        async with receiver(Recorder()) as (server, _):
            with pytest.raises(RuntimeError, match="already started"):
                await server.start()

    asyncio.run(twice())


@pytest.mark.parametrize(("stream", "frames", "rest", "skipped"), [
    (b"\nA\r\nB\r\nC", [b"\nA\r", b"\nB\r"], b"\nC", 0),
    (b"xx\nA\ryy\nB\rzz", [b"\nA\r", b"\nB\r"], b"", 6),
    (b"\nlost\nA\r", [b"\nA\r"], b"", 5),
    (b"no frame\r", [], b"", 9),
])
def test_split_frames(stream: bytes, frames: list[bytes], rest: bytes, skipped: int) -> None:
    buffer = bytearray(stream)
    assert split_frames(buffer) == (frames, skipped)
    assert bytes(buffer) == rest


def test_nak_carries_the_receiver_clock() -> None:
    async def scenario() -> bytes:
        async with receiver(Recorder(False)) as (_, port), connection(port) as (reader, writer):
            writer.write(frame(1))
            return await reply(reader)

    assert asyncio.run(scenario()) == build_nak(NOW)
