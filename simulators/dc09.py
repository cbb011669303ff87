"""A social-alarm unit speaking SIA DC-09 over TCP: genuine frames, retries, injectable faults.

It frames SIA DCS (``#acct|Nri<group>/<code><zone>``) and Contact ID (``#acct|QEEE GG ZZZ``)
data as ``<LF> crc 0LLL "id" seq [Rrcvr] Lpref #acct [data] _timestamp <CR>`` with a true
CRC-16/ARC, length and UTC timestamp, then waits for the receiver's ACK, NAK or DUH. Like a
real unit it resends the same sequence number on NAK or silence, and takes the receiver's
clock from a NAK (DC-09-2013 §5.5.3.2 puts it there so the unit can correct its own).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from adapters.dc09 import crc16, format_timestamp

STALE_BY = timedelta(minutes=5)  # far outside the receiver's -40 s window
_REPLY = re.compile(r'"(?P<kind>ACK|NAK|DUH)"(?P<seq>\d{4})[^_]*(?:_(?P<ts>.+))?')


class Fault(StrEnum):
    """What the unit can get wrong on one attempt."""

    NONE = "none"
    BAD_CRC = "bad_crc"
    WRONG_LENGTH = "wrong_length"
    STALE_TIMESTAMP = "stale_timestamp"


@dataclass(frozen=True, slots=True)
class ReceiverReply:
    """An acknowledgement from the receiver: its kind, echoed sequence, NAK timestamp."""

    kind: str
    sequence: str
    timestamp: datetime | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """How one message fared: its sequence and, per attempt, the reply or ``timeout``."""

    sequence: int
    replies: tuple[str, ...]

    @property
    def acknowledged(self) -> bool:
        """True when the last attempt got an ACK."""
        return self.replies[-1:] == ("ACK",)


def sia_data(account: str, code: str, zone: str = "", group: str | None = None) -> str:
    """SIA DCS data for one event, e.g. ``#1234|Nri1/MA001``."""
    area = "" if group is None else f"ri{group}/"
    return f"#{account}|N{area}{code}{zone}"


def cid_data(account: str, qualifier: int, event: int, group: int = 0, zone: int = 0) -> str:
    """Contact ID data, e.g. ``#1234|1101 00 001`` (new personal emergency, zone 1)."""
    return f"#{account}|{qualifier}{event:03d} {group:02d} {zone:03d}"


def encode_frame(
    message_id: str,
    sequence: int,
    account: str,
    data: str,
    *,
    receiver: str | None = None,
    prefix: str = "0",
    timestamp: datetime | None = None,
    fault: Fault = Fault.NONE,
) -> bytes:
    """One DC-09 frame, with ``fault`` applied to its CRC, length or timestamp."""
    if fault is Fault.STALE_TIMESTAMP:
        timestamp = (timestamp or datetime.now(UTC)) - STALE_BY
    stamp = "" if timestamp is None else format_timestamp(timestamp)
    rcvr = "" if receiver is None else f"R{receiver}"
    body = f'"{message_id}"{sequence:04d}{rcvr}L{prefix}#{account}[{data}]{stamp}'.encode("ascii")
    crc = crc16(body) ^ (0xFFFF if fault is Fault.BAD_CRC else 0)
    length = len(body) + (1 if fault is Fault.WRONG_LENGTH else 0)
    return b"\n" + f"{crc:04X}{length:04X}".encode("ascii") + body + b"\r"


def parse_reply(data: bytes) -> ReceiverReply:
    """Check a reply's CRC and length and read its token, sequence and timestamp."""
    frame = data.strip(b"\n\r")
    span = frame[8:]
    if re.fullmatch(rb"[0-9A-Fa-f]{8}", frame[:8]) is None:
        raise ValueError(f"reply {data!r} has no CRC and length fields")
    sent_crc, sent_length = int(frame[:4], 16), int(frame[4:8], 16)
    if sent_crc != crc16(span) or sent_length != len(span):
        raise ValueError(f"reply {data!r} fails its CRC or length")
    match = _REPLY.fullmatch(span.decode("ascii", errors="replace"))
    if match is None:
        raise ValueError(f"reply {data!r} is not ACK, NAK or DUH")
    moment = None
    if match["ts"] is not None:
        moment = datetime.strptime(match["ts"], "%H:%M:%S,%m-%d-%Y").replace(tzinfo=UTC)
    return ReceiverReply(match["kind"], match["seq"], moment)


class AlarmUnit:
    """One alarm unit with its account, sending each message until ACKed or out of attempts."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        account: str,
        receiver: str | None = None,
        prefix: str = "0",
        attempts: int = 3,
        reply_timeout: float = 2.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if attempts < 1 or reply_timeout <= 0:
            raise ValueError(f"alarm unit {account}: attempts >= 1 and reply_timeout > 0")
        self._host, self._port = host, port
        self.account, self._receiver, self._prefix = account, receiver, prefix
        self._attempts, self._reply_timeout = attempts, reply_timeout
        self._clock = clock
        self._offset = timedelta()
        self._sequence = 0

    async def send_sia(
        self, code: str, zone: str = "", group: str | None = None, faults: Sequence[Fault] = ()
    ) -> Delivery:
        """Send one SIA DCS event (e.g. ``MA``, zone ``001``)."""
        return await self.send("SIA-DCS", sia_data(self.account, code, zone, group), faults)

    async def send_cid(
        self, qualifier: int, event: int, zone: int = 0, faults: Sequence[Fault] = ()
    ) -> Delivery:
        """Send one Contact ID event (e.g. qualifier 1, event 101, zone 1)."""
        return await self.send("ADM-CID", cid_data(self.account, qualifier, event, 0, zone), faults)

    async def link_test(self, faults: Sequence[Fault] = ()) -> Delivery:
        """Send a NULL supervision message."""
        return await self.send("NULL", "", faults)

    async def send(self, message_id: str, data: str, faults: Sequence[Fault] = ()) -> Delivery:
        """Send a message; ``faults[i]`` spoils attempt ``i``, later attempts are clean."""
        self._sequence = self._sequence % 9999 + 1  # 0001..9999, then wraps (Annex C.2.3.7)
        replies: list[str] = []
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            for attempt in range(self._attempts):
                fault = faults[attempt] if attempt < len(faults) else Fault.NONE
                frame = encode_frame(
                    message_id, self._sequence, self.account, data, receiver=self._receiver,
                    prefix=self._prefix, timestamp=self._clock() + self._offset, fault=fault,
                )
                if streams is None:
                    streams = await asyncio.open_connection(self._host, self._port)
                outcome = await self._exchange(streams, frame)
                replies.append(outcome)
                if outcome == "closed":
                    await _close(streams[1])
                    streams = None
                if outcome in ("ACK", "DUH"):
                    break
        finally:
            if streams is not None:
                await _close(streams[1])
        return Delivery(self._sequence, tuple(replies))

    async def _exchange(
        self, streams: tuple[asyncio.StreamReader, asyncio.StreamWriter], frame: bytes
    ) -> str:
        """Write one attempt and read its outcome: a reply token, ``timeout`` or ``closed``."""
        reader, writer = streams
        writer.write(frame)
        await writer.drain()
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r"), self._reply_timeout)
        except TimeoutError:
            return "timeout"
        except (asyncio.IncompleteReadError, ConnectionError):
            return "closed"
        reply = parse_reply(raw[raw.rfind(b"\n") :])
        if reply.kind == "NAK":
            if reply.timestamp is not None:
                self._offset = reply.timestamp - self._clock()
            return reply.kind
        # ACK and DUH echo the sequence; one for another message is not an answer to this one.
        return reply.kind if int(reply.sequence) == self._sequence else "wrong_sequence"


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with suppress(ConnectionError):
        await writer.wait_closed()
