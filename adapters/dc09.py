"""SIA DC-09 frames from social-alarm units (SIA DCS or Ademco Contact ID) -> canonical events.

Wire layout (ANSI/SIA DC-09-2013 §5.5.1; PROTOCOLS.md §4b), ASCII:

    <LF> crc(4 hex) 0LLL(4 hex) "id" seq(4 digits) [R rcvr(1-6 hex)] L pref(1-6 hex)
         # acct(1-16 hex) [data] [x-data]... [_HH:MM:SS,MM-DD-YYYY] <CR>

CRC-16/ARC (reflected poly 0xA001, init 0; pysiaalarm ``event.py::_crc_calc``) and the length
both cover the span from the opening ``"`` up to, not including, <CR> (PROTOCOLS trap 9); both
are checked. The timestamp is UTC; unencrypted frames may omit it (DC-09-2013 §5.5.2.1.1 says
so of the NULL message; pysiaalarm's content regex makes it optional on every frame).

Which reply a frame earns (``Frame.reply``), in the order the checks run:

* no reply: broken framing or a CRC mismatch. DC-09-2007 Annex C.2.3.5 tests that the receiver
  "does not respond" to a bad CRC, and pysiaalarm answers None; the unit retries.
* NAK: a header we cannot read (NAK's fixed ``0000R0L0A0`` form needs none of its fields, as
  pysiaalarm NAKs format errors), and an unreadable or out-of-window timestamp (§5.5.3.2).
* DUH: CRC-valid but unusable - wrong length, unknown id, encrypted, unreadable data (§5.5.3.3:
  "unable to process an otherwise correctly received message"). A retry cannot fix these.
* ACK: everything else; NULL and an empty SIA-DCS data block ``[]`` are link tests that carry
  no event. Codes missing from ``_ROWS`` become ``dc09.unmapped`` events and are
  ACKed: stored for a person to read rather than refused (pysiaalarm sends DUH instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event

CHANNEL = "dc09"
DEFAULT_WINDOW = (40, 20)  # seconds behind / ahead of the receiver clock (pysiaalarm default)
UNMAPPED = "dc09.unmapped"
ENCRYPTED_REASON = "encrypted DC-09 frames are not supported without a key"

# One row per concept: Contact ID code, SIA new code, SIA restore code, new type, restore type.
# SIA pairs follow pysiaalarm data/adm_mapping.json (100 -> MA/MH, 401 -> OP/CL, ...).
_ROWS: tuple[tuple[int, str, str | None, str, str], ...] = (
    (100, "MA", "MH", "alarm.medical", "alarm.medical.restored"),
    (101, "QA", "QH", "alarm.personal_emergency", "alarm.personal_emergency.restored"),
    (110, "FA", "FH", "alarm.fire", "alarm.fire.restored"),
    (113, "WA", "WH", "alarm.water", "alarm.water.restored"),
    (120, "PA", "PH", "alarm.panic", "alarm.panic.restored"),
    (121, "HA", "HH", "alarm.duress", "alarm.duress.restored"),
    (301, "AT", "AR", "device.power_lost", "device.power_restored"),
    (302, "YT", "YR", "device.battery_low", "device.battery_ok"),
    # 401: qualifier 1 is an opening (user disarmed), 3 a closing (armed).
    (401, "OP", "CL", "system.disarmed", "system.armed"),
    (602, "RP", None, "alarm.test", "alarm.test"),
)
_CID_TYPES = {cid: (new, restore) for cid, _, _, new, restore in _ROWS}
_SIA_TYPES = {code: (new, "new") for _, code, _, new, _ in _ROWS} | {
    code: (restore, "restore") for _, _, code, _, restore in _ROWS if code is not None
}
# Contact ID event qualifier Q: 1 new event/opening, 3 restore/closing, 6 previously reported.
_CID_QUALIFIERS = {"1": "new", "3": "restore", "6": "previous"}

_HEX8 = re.compile(rb"[0-9A-Fa-f]{8}")  # int() alone would take " 1_2" or "+123"
_HEADER = re.compile(
    r'"(?P<star>\*?)(?P<id>[A-Z0-9-]{1,12})"(?P<seq>\d{4})(?:R(?P<rcvr>[0-9A-Fa-f]{1,6}))?'
    r"L(?P<pref>[0-9A-Fa-f]{1,6})#(?P<acct>[0-9A-Fa-f]{1,16})\["
)
_TAIL = re.compile(r"(?P<data>[^\[\]]*)\](?P<xdata>(?:\[[^\[\]]*\])*)(?:_(?P<ts>.*))?")
_TIMESTAMP = re.compile(r"\d{2}:\d{2}:\d{2},\d{2}-\d{2}-\d{4}")
_TIMESTAMP_FORMAT = "%H:%M:%S,%m-%d-%Y"
_ACCOUNT_PART = re.compile(r"#[0-9A-Fa-f]{1,16}")
# SIA DCS segment ("/"-separated): lowercase modifiers (ri area, id user, pi, ti time), then a
# two-letter event code, the zone digits and free text (e.g. "ri1CL0^VX FRONTE ^").
_SIA_SEGMENT = re.compile(
    r"(?P<mods>(?:(?:ri|id|pi|ti)[0-9:]*)*)(?:(?P<code>[A-Z]{2})(?P<zone>\d*).*)?"
)
_RI = re.compile(r"ri(\d*)")
# Contact ID: "QEEE GG ZZZ" (as in the DC-09 example "1110 00 129"); a space after Q is accepted.
_CID = re.compile(r"(?P<q>\d) ?(?P<event>\d{3}) (?P<group>\d{2}) (?P<zone>\d{3})")


class Reply(StrEnum):
    """The DC-09 acknowledgement tokens a receiver sends."""

    ACK = "ACK"
    NAK = "NAK"
    DUH = "DUH"


class Outcome(StrEnum):
    """Why a frame earned its reply; also the ``reason`` label of rejection counters."""

    ACCEPTED = "accepted"
    LINK_TEST = "link_test"
    FRAMING = "framing"
    CRC = "crc"
    LENGTH = "length"
    FORMAT = "format"
    UNSUPPORTED = "unsupported"
    ENCRYPTED = "encrypted"
    TIMESTAMP = "timestamp"


@dataclass(frozen=True, slots=True)
class Header:
    """The routing fields of a frame, echoed in ACK and DUH."""

    message_id: str
    encrypted: bool
    sequence: str
    receiver: str | None
    prefix: str
    account: str


@dataclass(frozen=True, slots=True)
class Frame:
    """One parsed frame: the reply it earns, why, and the events it carries."""

    reply: Reply | None
    outcome: Outcome
    detail: str
    header: Header | None = None
    timestamp: datetime | None = None
    events: tuple[Event, ...] = ()

    def reply_bytes(self, now: datetime) -> bytes | None:
        """The framed reply for this frame at receiver time ``now``; None means stay silent."""
        if self.reply is None:
            return None
        if self.reply is Reply.NAK or self.header is None:
            return build_nak(now)
        return build_duh(self.header) if self.reply is Reply.DUH else build_ack(self.header)


def crc16(data: bytes) -> int:
    """CRC-16/ARC: reflected polynomial 0xA001, initial value 0, no final XOR."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def wrap(body: str) -> bytes:
    """Frame a body as <LF> CRC length body <CR>, CRC and length as 4 uppercase hex digits."""
    raw = body.encode("ascii")
    return b"\n" + f"{crc16(raw):04X}{len(raw):04X}".encode("ascii") + raw + b"\r"


def format_timestamp(moment: datetime) -> str:
    """The DC-09 timestamp field (with its ``_``) for an aware moment, in UTC."""
    if moment.utcoffset() is None:
        raise ValueError("naive datetime: a DC-09 timestamp is UTC and needs an aware moment")
    return "_" + moment.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)


def build_ack(header: Header) -> bytes:
    """ACK echoing sequence, receiver, prefix and account: ``"ACK"seq[Rrcvr]Lpref#acct[]``."""
    return wrap(_addressed("ACK", header))


def build_duh(header: Header) -> bytes:
    """DUH, addressed like an ACK: the frame arrived intact but cannot be processed."""
    return wrap(_addressed("DUH", header))


def build_nak(now: datetime) -> bytes:
    """NAK ``"NAK"0000R0L0A0[]_timestamp``, carrying the receiver's clock."""
    return wrap('"NAK"0000R0L0A0[]' + format_timestamp(now))


def _addressed(token: str, header: Header) -> str:
    receiver = "" if header.receiver is None else f"R{header.receiver}"
    return f'"{token}"{header.sequence}{receiver}L{header.prefix}#{header.account}[]'


def parse_frame(
    data: bytes, now: datetime, *, window: tuple[int, int] = DEFAULT_WINDOW
) -> Frame:
    """Parse one frame (<LF> to <CR> inclusive); decide its reply at aware receiver time ``now``."""
    if now.utcoffset() is None:
        raise ValueError("naive datetime: the receiver clock must be aware to compare UTC stamps")
    frame = _parse(data)
    if frame.reply is not Reply.ACK or frame.timestamp is None:
        return frame
    behind, ahead = window
    if now - timedelta(seconds=behind) <= frame.timestamp <= now + timedelta(seconds=ahead):
        return frame
    skew = int((frame.timestamp - now).total_seconds())
    detail = f"timestamp {skew:+d} s from the receiver clock, outside -{behind}/+{ahead} s"
    return replace(frame, reply=Reply.NAK, outcome=Outcome.TIMESTAMP, detail=detail, events=())


def decode(payload: bytes, ctx: DecodeContext) -> list[Event]:
    """Decode one whole DC-09 frame into events; a link test gives none.

    No timestamp window here: the receiver checked it before storing the frame, and a stored
    frame must decode the same when replayed later, so ``ctx`` is not consulted.
    """
    frame = _parse(payload)
    if frame.reply is not Reply.ACK:
        raise DecodeError(CHANNEL, frame.detail)
    return list(frame.events)


def _parse(data: bytes) -> Frame:
    if len(data) < 10 or data[:1] != b"\n" or data[-1:] != b"\r" or data[9:10] != b'"':
        return Frame(None, Outcome.FRAMING, "not a DC-09 frame: <LF>, CRC, length, '\"' ... <CR>")
    if _HEX8.fullmatch(data, 1, 9) is None:
        return Frame(None, Outcome.FRAMING, "CRC or length field is not hexadecimal")
    span = data[9:-1]
    sent_crc, sent_length = int(data[1:5], 16), int(data[5:9], 16)
    if sent_crc != crc16(span):
        return Frame(None, Outcome.CRC, f"CRC {sent_crc:04X} sent, {crc16(span):04X} computed")
    if not span.isascii():
        return Frame(Reply.NAK, Outcome.FORMAT, "frame holds non-ASCII bytes")
    text = span.decode("ascii")
    match = _HEADER.match(text)
    if match is None:
        return Frame(Reply.NAK, Outcome.FORMAT, "header is not \"id\"seq[Rrcvr]Lpref#acct[")
    header = Header(
        match["id"], bool(match["star"]), match["seq"], match["rcvr"], match["pref"], match["acct"]
    )
    if sent_length != len(span):
        detail = f"length {sent_length:04X} sent, span is {len(span):04X} bytes"
        return Frame(Reply.DUH, Outcome.LENGTH, detail, header)
    if header.encrypted:
        return Frame(Reply.DUH, Outcome.ENCRYPTED, ENCRYPTED_REASON, header)
    if header.message_id not in ("SIA-DCS", "ADM-CID", "NULL"):
        detail = f"unsupported message id {header.message_id!r}"
        return Frame(Reply.DUH, Outcome.UNSUPPORTED, detail, header)
    tail = _TAIL.fullmatch(text, match.end())
    if tail is None:
        return Frame(Reply.DUH, Outcome.FORMAT, "data block is not [data][x-data]..._ts", header)
    timestamp = None
    if tail["ts"] is not None:
        timestamp = _read_timestamp(tail["ts"])
        if timestamp is None:
            detail = "timestamp is not HH:MM:SS,MM-DD-YYYY"
            return Frame(Reply.NAK, Outcome.TIMESTAMP, detail, header)
    block = _event_block(tail["data"])
    if header.message_id == "NULL" or not block:
        return Frame(Reply.ACK, Outcome.LINK_TEST, "link test", header, timestamp)
    try:
        events = [_cid_event(block)] if header.message_id == "ADM-CID" else _sia_events(block)
    except ValueError as error:
        return Frame(Reply.DUH, Outcome.FORMAT, str(error), header, timestamp)
    common = {
        "account": header.account,
        "receiver": header.receiver,
        "prefix": header.prefix,
        "sequence": header.sequence,
        "protocol": header.message_id,
        "raw": tail["data"],
    }
    built = tuple(Event(kind, timestamp, common | fields) for kind, fields in events)
    return Frame(Reply.ACK, Outcome.ACCEPTED, "ok", header, timestamp, built)


def _read_timestamp(text: str) -> datetime | None:
    if _TIMESTAMP.fullmatch(text) is None:
        return None
    try:
        return datetime.strptime(text, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def _event_block(data: str) -> str:
    """The event part of ``[#acct|block|extra...]``; the account and ASCII extras are dropped."""
    parts = data.split("|")
    if len(parts) > 1 and (parts[0] == "" or _ACCOUNT_PART.fullmatch(parts[0])):
        parts = parts[1:]
    return parts[0]


def _cid_event(block: str) -> tuple[str, dict[str, Any]]:
    match = _CID.fullmatch(block)
    if match is None or match["q"] not in _CID_QUALIFIERS:
        raise ValueError("Contact ID data is not Q EEE GG ZZZ with Q in 1, 3, 6")
    qualifier = _CID_QUALIFIERS[match["q"]]
    new, restore = _CID_TYPES.get(int(match["event"]), (UNMAPPED, UNMAPPED))
    kind = restore if qualifier == "restore" else new
    fields = {"code": match["event"], "qualifier": qualifier}
    return kind, fields | {"zone": match["zone"], "group": match["group"]}


def _sia_events(block: str) -> list[tuple[str, dict[str, Any]]]:
    if not block.startswith("N"):
        raise ValueError("SIA DCS data does not start with N (new event)")
    events: list[tuple[str, dict[str, Any]]] = []
    group = None
    for segment in block[1:].split("/"):
        match = _SIA_SEGMENT.fullmatch(segment)
        if match is None:
            raise ValueError("SIA DCS segment is not [modifiers]CODE[zone][text]")
        for area in _RI.findall(match["mods"]):
            group = area or None
        if match["code"] is None:
            continue
        kind, qualifier = _SIA_TYPES.get(match["code"], (UNMAPPED, "new"))
        fields = {"code": match["code"], "qualifier": qualifier}
        events.append((kind, fields | {"zone": match["zone"] or None, "group": group}))
    if not events:
        raise ValueError("SIA DCS data carries no event code")
    return events
