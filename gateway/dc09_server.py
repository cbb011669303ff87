"""SIA DC-09 receiver: a TCP listener that ACKs a social-alarm frame only once it is stored.

A unit keeps resending a frame until it gets an ACK, so the ACK is the receiver's promise that
the alarm is safe. The reply to each frame (the frame layout is in ``adapters.dc09``):

* no reply: broken framing or a CRC mismatch (DC-09-2007 Annex C.2.3.5; pysiaalarm) - the
  unit's own timer resends it;
* NAK (with our clock): an unreadable header, a timestamp outside the window (DC-09-2013
  §5.5.3.2), and also a failed account lookup, a ``submit`` that resolves False, raises or times
  out - each is transient, so we want the unit to retry;
* DUH: a wrong length, an encrypted, unsupported or unreadable frame, and an account no client
  owns (§5.5.3.3, "unable to process"). pysiaalarm NAKs an unknown account instead; DUH says a
  retry is pointless, so the unit can fail over to its backup path sooner;
* ACK: a NULL link test from a known account at once (nothing to store), any other frame only
  after ``submit(client_id, frame)`` resolves True. A submit that times out may still commit,
  so a retry can store a frame twice; account, sequence and timestamp identify the copy.

Frames are cut from the byte stream at <LF> ... <CR>, so they may arrive split over reads or
several to a read. A frame or partial frame over ``max_frame`` bytes, more than ``max_frame``
bytes of noise between frames, or more than 16 unanswerable frames in a row close the
connection. Logs name the account and sequence, never the event data.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime

from adapters.dc09 import (
    DEFAULT_WINDOW,
    Frame,
    Outcome,
    Reply,
    build_ack,
    build_duh,
    build_nak,
    parse_frame,
)

_log = logging.getLogger(__name__)

# The gateway's storage seam, called on the event loop, so it must not block: it returns at once
# a future (or awaitable) that resolves True once the frame is committed, False if it was not.
Submit = Callable[[str, bytes], concurrent.futures.Future[bool] | Awaitable[bool]]
# Account (as sent on the wire) -> client id, or None for an account no client owns.
AccountClient = Callable[[str], str | None]

_READ_SIZE = 4096
# A unit resends a frame we ignored only after its reply timeout; a burst of this many unreadable
# frames on one connection is noise, not a unit.
_MAX_SILENT = 16


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Dc09Server:
    """An asyncio DC-09 receiver; ``counts`` holds plain per-outcome counters."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        account_client: AccountClient,
        submit: Submit,
        window: tuple[int, int] = DEFAULT_WINDOW,
        idle_timeout: float = 60.0,
        submit_timeout: float = 10.0,
        max_frame: int = 1024,
        max_connections: int = 256,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"DC-09 receiver: port {port} is not 0-65535")
        if min(window) < 0:
            raise ValueError(f"DC-09 receiver: window {window} must not be negative")
        if idle_timeout <= 0 or submit_timeout <= 0:
            raise ValueError("DC-09 receiver: idle_timeout and submit_timeout must be positive")
        if max_frame < 64 or max_connections < 1:
            raise ValueError("DC-09 receiver: max_frame must be >= 64, max_connections >= 1")
        self._host, self._port = host, port
        self._account_client, self._submit = account_client, submit
        self._window = window
        self._idle_timeout, self._submit_timeout = idle_timeout, submit_timeout
        self._max_frame, self._max_connections = max_frame, max_connections
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.counts: Counter[str] = Counter()

    async def start(self) -> int:
        """Start listening; returns the bound port (useful when ``port`` is 0)."""
        if self._server is not None:
            raise RuntimeError(f"DC-09 receiver on {self._host}:{self._port} already started")
        self._server = await asyncio.start_server(
            self._connection, self._host, self._port, limit=4 * self._max_frame
        )
        port: int = self._server.sockets[0].getsockname()[1]
        _log.info("DC-09 receiver listening on %s:%d", self._host, port)
        return port

    async def stop(self) -> None:
        """Stop listening, close every connection and wait for their tasks."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if len(self._connections) > self._max_connections:
                self.counts["too_many_connections"] += 1
                return
            await self._serve(reader, writer)
        except TimeoutError:
            self.counts["idle_timeout"] += 1
        except (ConnectionError, OSError):
            self.counts["connection_error"] += 1
        except asyncio.CancelledError:
            # stop() cancels us; ending normally keeps asyncio's stream callback from logging
            # the cancellation as an error.
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        noise = 0  # bytes outside frames since the last frame
        silent = 0  # frames in a row that earned no reply (broken framing, bad CRC)
        while True:
            chunk = await asyncio.wait_for(reader.read(_READ_SIZE), self._idle_timeout)
            if not chunk:
                return
            buffer += chunk
            frames, skipped = split_frames(buffer)
            noise = skipped if frames else noise + skipped
            if noise > self._max_frame or len(buffer) > self._max_frame or any(
                len(frame) > self._max_frame for frame in frames
            ):
                return self._flood()
            for frame in frames:
                reply = await self._answer(frame)
                silent = silent + 1 if reply is None else 0
                if silent > _MAX_SILENT:
                    return self._flood()
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()

    def _flood(self) -> None:
        self.counts["flood"] += 1
        _log.warning("DC-09: closing a connection: oversized frame or a flood of noise")

    async def _answer(self, raw: bytes) -> bytes | None:
        now = self._clock()
        frame = parse_frame(raw, now, window=self._window)
        header = frame.header
        if frame.reply is not Reply.ACK or header is None:
            self._record(frame, str(frame.outcome), frame.detail)
            return frame.reply_bytes(now)
        try:
            client_id = await asyncio.to_thread(self._account_client, header.account)
        except Exception as error:  # the lookup is a seam: any failure means "retry later"
            self._record(frame, "account_lookup_failed", type(error).__name__)
            return build_nak(self._clock())
        if client_id is None:
            self._record(frame, "unknown_account", "no client owns this account")
            return build_duh(header)
        if frame.outcome is Outcome.LINK_TEST:
            self._record(frame, str(Outcome.LINK_TEST), "link test", client_id)
            return build_ack(header)
        if await self._store(client_id, raw):
            self._record(frame, "stored", "stored", client_id)
            return build_ack(header)
        self._record(frame, "not_stored", "submit did not confirm the commit", client_id)
        return build_nak(self._clock())

    async def _store(self, client_id: str, raw: bytes) -> bool:
        try:
            pending = self._submit(client_id, raw)
            awaitable = (
                asyncio.wrap_future(pending)
                if isinstance(pending, concurrent.futures.Future)
                else pending
            )
            return await asyncio.wait_for(awaitable, self._submit_timeout) is True
        except Exception as error:  # a failed or slow store is a NAK, never a crash
            _log.warning("DC-09: submit for client %s failed: %r", client_id, error,
                         extra={"client_id": client_id})
            return False

    def _record(self, frame: Frame, outcome: str, detail: str,
                client_id: str | None = None) -> None:
        self.counts[outcome] += 1
        header = frame.header
        account = "?" if header is None else header.account
        sequence = "?" if header is None else header.sequence
        level = logging.INFO if outcome in ("stored", "link_test") else logging.WARNING
        # The alarm unit's MQTT identity, once its account is known: what its messages and
        # dead letters are filed under.
        extra = {} if client_id is None else {"client_id": client_id}
        _log.log(level, "DC-09 account %s seq %s: %s (%s)", account, sequence, outcome, detail,
                 extra=extra)


def split_frames(buffer: bytearray) -> tuple[list[bytes], int]:
    """Cut complete <LF>...<CR> frames off ``buffer``; returns them and the bytes skipped.

    A frame starts at the last <LF> before its <CR>; anything before that <LF> is noise. What
    stays in ``buffer`` is an incomplete frame starting at <LF>, or nothing.
    """
    frames: list[bytes] = []
    skipped = 0
    while (end := buffer.find(b"\r")) >= 0:
        start = buffer.rfind(b"\n", 0, end)
        if start < 0:
            skipped += end + 1
        else:
            skipped += start
            frames.append(bytes(buffer[start : end + 1]))
        del buffer[: end + 1]
    start = buffer.find(b"\n")
    drop = len(buffer) if start < 0 else start
    del buffer[:drop]
    return frames, skipped + drop
