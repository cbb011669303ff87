"""SCAIP (SS 91100) social-alarm requests (channel ``scaip``) -> canonical events, and replies.

A request is the XML body of a SIP MESSAGE (PROTOCOLS.md §4): a flat ``<mrq>`` of short
elements, e.g. (Doro capture, public Node.js ARC ``scaip.js``)

    <mrq><ref>803137200003</ref><mty>ME</mty><cid> 8031372</cid><dty>0004</dty>
         <stc>0010</stc><crd>gsm:+</crd></mrq>

``ref``, ``cid`` and ``dty`` are mandatory; ``mty`` defaults to ME and, for ME only, ``stc``
to 10 (manual alarm). Numeric codes arrive zero-padded or not and with stray whitespace
(trap 10), so they are trimmed and read as integers. ``crd`` may repeat (the Node ARC walks
a list of them). ``<lge>`` holds the position of a mobile alarm: ``geo`` "lat,lon" in
decimal degrees (RFC 5870, "geo:" optional), ``gga`` an NMEA GGA sentence, ``tim`` its time.

Deliberate choices:

* Mandatory elements must be present and valid, and ``mty`` must be known: otherwise the
  payload is rejected (dead-lettered, kept). A malformed optional element never costs an
  alarm: the event is still emitted, the element stays in ``data.raw`` and the reason goes
  to ``data.problems``.
* The event type comes from ``mty`` first (a PI heartbeat may carry stc 102 or 0009), then
  from tables: (dty, stc) pairs, the device type for alarm statuses 9 and 10, then
  device-independent statuses; anything else is ``alarm.event`` with the raw codes.
* Only UTF-8, and no DTD at all: ``<!DOCTYPE``/``<!ENTITY`` are refused before parsing,
  which also rules out entity expansion and external entities in the standard parser.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from typing import Any
from xml.sax.saxutils import escape

from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event

CHANNEL = "scaip"
MAX_BYTES = 16 * 1024
MANDATORY = ("ref", "cid", "dty")
MESSAGE_TYPES = ("ME", "RE", "IN", "PI")
# Optional numeric codes: device component, location, call handling, priority, info code,
# heartbeat options, system config, additional message, media request.
_OPTIONAL_CODES = ("dco", "lco", "cha", "pri", "ico", "hbo", "sco", "ame", "mreq")
_CODE = re.compile(r"[0-9]{1,6}")
_REF = re.compile(r"[!-~]{1,64}")
_GEO = re.compile(
    r"(?:geo:)?([+-]?\d{1,3}(?:\.\d+)?),([+-]?\d{1,3}(?:\.\d+)?)(?:,[+-]?\d+(?:\.\d+)?)?(?:;.*)?",
    re.ASCII,
)
_DEGREE_STEP = Decimal("0.0000001")  # about 1 cm: enough for a position from NMEA minutes


class StatusNumber(IntEnum):
    """``snu`` of a reply. 0-7 per Syntilio Datahub-Scaip-Proxy SPEC.md (StatusNumber, which
    its StatusNumber.java glosses "0=OK, 1-7=error"); 99 is the "undefined error" the public
    Node.js ARC scaip.js answers with until it has accepted a request [src, not in SPEC.md]."""

    OK = 0
    MESSAGE_TOO_LONG = 1
    INVALID_FORMAT = 2
    WRONG_DATA_CONTENT = 3
    HOLD = 4
    NOT_TREATED = 5
    BUSY = 6
    MANDATORY_TAG_MISSING = 7
    UNDEFINED_ERROR = 99


# (dty, stc) pairs with a meaning of their own: the pill dispenser (dty 11) statuses 81-83.
_BY_DEVICE_AND_STATUS = {
    (11, 81): "dispenser.dose_missed",  # pill not taken
    (11, 82): "dispenser.dose_due",  # pill reminder
    (11, 83): "dispenser.dose_taken",  # pill taken
}
# Alarm statuses (9 automatic, 10 manual): the device type says what the alarm is.
_ALARM_STATUSES = (9, 10)
_ALARM_BY_DEVICE = {
    2: "alarm.button", 3: "alarm.button", 4: "alarm.button", 6: "alarm.button",
    7: "alarm.button", 51: "alarm.button",  # local unit, pendant, fixed, attack, panic, tracker
    5: "alarm.fall", 30: "alarm.fall",  # fall detector, automatic man-down detector
    10: "alarm.inactivity", 12: "alarm.bed", 13: "alarm.mat", 14: "alarm.door",
    15: "alarm.wandering", 16: "alarm.enuresis", 17: "alarm.epilepsy", 21: "alarm.gas",
    23: "alarm.smoke", 25: "alarm.heat", 26: "alarm.carbon_monoxide", 33: "alarm.flood",
}
# Statuses that mean the same from any device (SPEC.md StatusCode names in comments).
_BY_STATUS = {
    14: "device.battery_failure", 15: "device.battery_ok", 16: "device.battery_low",
    19: "alarm.cancel",
    23: "device.ip_link_lost", 112: "device.ip_link_restored",
    24: "device.mobile_link_lost", 113: "device.mobile_link_restored",
    67: "device.malfunction", 73: "device.offline", 75: "device.online",
    85: "device.power_lost", 86: "device.power_restored",
    92: "alarm.reset", 93: "alarm.reset",  # automatic / manual reset sent as ME
    100: "alarm.temperature_high", 101: "alarm.temperature_low",
    102: "alarm.test", 103: "alarm.test",  # test transmission, primary / redundant channel
    110: "alarm.assistance", 111: "alarm.intervention_complete",
    117: "alarm.lying_in_bed", 119: "alarm.movement",
    123: "device.radio_supervision_lost", 124: "device.radio_supervision_restored",
    125: "device.tamper",
}
_BY_MESSAGE_TYPE = {"PI": "alarm.heartbeat", "RE": "alarm.reset", "IN": "alarm.information"}


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _root(payload: bytes, name: str) -> ET.Element:
    """Parse untrusted bytes into the root element ``name``, or raise DecodeError."""
    if len(payload) > MAX_BYTES:
        raise DecodeError(CHANNEL, f"payload is {len(payload)} bytes; the limit is {MAX_BYTES}")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise DecodeError(CHANNEL, f"payload is not UTF-8 (byte {exc.start})") from None
    if not text:
        raise DecodeError(CHANNEL, "empty payload")
    upper = text.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        raise DecodeError(CHANNEL, "DOCTYPE and ENTITY declarations are refused")
    try:
        root = ET.fromstring(text)  # noqa: S314 - no DTD can reach the parser (checked above)
    except (ET.ParseError, ValueError) as exc:
        raise DecodeError(CHANNEL, f"malformed XML: {exc}") from None
    if _local(root.tag) != name:
        raise DecodeError(CHANNEL, f"expected root element <{name}>, got <{_local(root.tag)}>")
    return root


def _children(root: ET.Element) -> tuple[dict[str, str], list[str], ET.Element | None]:
    """Simple elements by name (each at most once), the ``crd`` list and ``<lge>``."""
    fields: dict[str, str] = {}
    crd: list[str] = []
    lge = None
    for child in root:
        name = _local(child.tag)
        if name == "crd":
            crd.append((child.text or "").strip())
        elif name in fields or (name == "lge" and lge is not None):
            raise DecodeError(CHANNEL, f"element <{name}> appears more than once")
        elif name == "lge":
            lge = child
        else:
            fields[name] = child.text or ""
    return fields, crd, lge


def _ref(fields: dict[str, str]) -> str:
    if "ref" not in fields:
        raise DecodeError(CHANNEL, "missing mandatory element <ref>")
    ref = fields["ref"].strip()
    if not ref:
        raise DecodeError(CHANNEL, "mandatory element <ref> is empty")
    if not _REF.fullmatch(ref):
        raise DecodeError(CHANNEL, f"element <ref>: expected 1-64 printable ASCII, got {ref!r}")
    return ref


def request_ref(payload: bytes) -> str:
    """The ``ref`` of a request: enough to answer it even when the rest is rejected."""
    fields, _, _ = _children(_root(payload, "mrq"))
    return _ref(fields)


def _code(text: str) -> int | None:
    stripped = text.strip()
    return int(stripped) if _CODE.fullmatch(stripped) else None


def _degrees(text: str, width: int) -> Decimal:
    # NMEA (d)ddmm.mmmm: whole degrees, then minutes (below 60).
    minutes = Decimal(text[width:])
    if minutes >= 60:
        raise ValueError(f"minutes {minutes} out of range")
    return (Decimal(text[:width]) + minutes / 60).quantize(_DEGREE_STEP)


def _gga(sentence: str) -> tuple[Decimal, Decimal]:
    body, star, checksum = sentence.strip().lstrip("$").partition("*")
    if star:
        computed = 0
        for char in body.encode("ascii", "replace"):
            computed ^= char
        if checksum.strip().upper() != f"{computed:02X}":
            raise ValueError(f"checksum {checksum.strip()!r}, computed {computed:02X}")
    parts = body.split(",")
    if len(parts) < 7 or not parts[0].endswith("GGA"):
        raise ValueError("not a GGA sentence")
    if parts[6] in ("", "0"):
        raise ValueError("no GPS fix (quality 0)")
    lat_ok = re.fullmatch(r"[0-9]{4}(\.[0-9]+)?", parts[2]) and parts[3] in ("N", "S")
    lon_ok = re.fullmatch(r"[0-9]{5}(\.[0-9]+)?", parts[4]) and parts[5] in ("E", "W")
    if not (lat_ok and lon_ok):
        raise ValueError("latitude or longitude field malformed")
    lat, lon = _degrees(parts[2], 2), _degrees(parts[4], 3)
    return (-lat if parts[3] == "S" else lat), (-lon if parts[5] == "W" else lon)


def _geo(text: str) -> tuple[Decimal, Decimal]:
    match = _GEO.fullmatch(text.strip())
    if not match:
        raise ValueError(f"expected 'lat,lon' in degrees, got {text!r}")
    return Decimal(match.group(1)), Decimal(match.group(2))


def _location(lge: ET.Element, raw: dict[str, str], problems: list[str]) -> dict[str, Any] | None:
    """The first usable position in ``<lge>``: ``geo``, else ``gga``; problems are noted."""
    parts = {_local(child.tag): child.text or "" for child in lge}
    raw.update({f"lge/{name}": text for name, text in parts.items()})
    for source, read in (("geo", _geo), ("gga", _gga)):
        if source not in parts:
            continue
        try:
            lat, lon = read(parts[source])
            if abs(lat) > 90 or abs(lon) > 180:
                raise ValueError(f"position {lat},{lon} out of range")
        except ValueError as exc:
            problems.append(f"<lge/{source}>: {exc}")
            continue
        location: dict[str, Any] = {"lat": lat, "lon": lon, "source": source}
        if parts.get("tim", "").strip():
            location["time"] = parts["tim"].strip()
        return location
    return None


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed ``<mrq>``: the normalised codes plus everything as sent."""

    ref: str
    cid: str
    mty: str
    dty: int
    stc: int | None
    data: dict[str, Any]


def parse_request(payload: bytes) -> Request:
    """Parse and check one ``<mrq>``; raises DecodeError naming what was wrong."""
    fields, crd, lge = _children(_root(payload, "mrq"))
    ref = _ref(fields)
    for name in MANDATORY[1:]:
        if name not in fields:
            raise DecodeError(CHANNEL, f"missing mandatory element <{name}>")
        if not fields[name].strip():
            raise DecodeError(CHANNEL, f"mandatory element <{name}> is empty")
    cid = fields["cid"].strip()
    dty = _code(fields["dty"])
    if dty is None:
        raise DecodeError(CHANNEL, f"element <dty>: expected a numeric code, got {fields['dty']!r}")
    mty = fields.get("mty", "").strip().upper() or "ME"
    if mty not in MESSAGE_TYPES:
        raise DecodeError(CHANNEL, f"element <mty>: expected ME, RE, IN or PI, got {mty!r}")
    problems: list[str] = []
    stc = 10 if mty == "ME" else None  # the default applies to alarms only (PROTOCOLS §4)
    if "stc" in fields:
        stc = _code(fields["stc"])
        if stc is None:
            problems.append(f"<stc>: expected a numeric code, got {fields['stc']!r}")
    data: dict[str, Any] = {"ref": ref, "cid": cid, "mty": mty, "dty": dty, "stc": stc}
    if fields.get("did", "").strip():
        data["did"] = fields["did"].strip()
    for name in _OPTIONAL_CODES:
        if name in fields:
            code = _code(fields[name])
            if code is None:
                problems.append(f"<{name}>: expected a numeric code, got {fields[name]!r}")
            else:
                data[name] = code
    data["crd"] = crd
    raw = dict(fields)
    data["location"] = None if lge is None else _location(lge, raw, problems)
    data["raw"] = raw
    if problems:
        data["problems"] = problems
    return Request(ref=ref, cid=cid, mty=mty, dty=dty, stc=stc, data=data)


def event_type(request: Request) -> str:
    """The canonical event type of a request (table-driven; ``alarm.event`` when unknown)."""
    if request.mty in _BY_MESSAGE_TYPE:
        return _BY_MESSAGE_TYPE[request.mty]
    if request.stc is None:
        return "alarm.event"
    if (request.dty, request.stc) in _BY_DEVICE_AND_STATUS:
        return _BY_DEVICE_AND_STATUS[request.dty, request.stc]
    if request.stc in _ALARM_STATUSES:
        return _ALARM_BY_DEVICE.get(request.dty, "alarm.event")
    return _BY_STATUS.get(request.stc, "alarm.event")


def decode(payload: bytes, ctx: DecodeContext) -> list[Event]:
    """Decode one ``<mrq>`` into its event; the request carries no time, so none is set."""
    request = parse_request(payload)
    return [Event(type=event_type(request), occurred_at=None, data=request.data)]


def build_reply(ref: str, snu: int = StatusNumber.OK, *, ste: str | None = None) -> bytes:
    """The ``<mrs>`` answering request ``ref`` with status number ``snu``."""
    status = StatusNumber(snu)  # ValueError for a number no public source defines
    body = f"<ref>{escape(ref)}</ref><snu>{int(status)}</snu>"
    if ste:
        body += f"<ste>{escape(ste)}</ste>"
    return f"<mrs>{body}</mrs>".encode()


def reply(payload: bytes, snu: int = StatusNumber.OK, *, ste: str | None = None) -> bytes:
    """Answer a request: its ``ref`` echoed with ``snu`` (0 = OK); DecodeError without a ref."""
    return build_reply(request_ref(payload), snu, ste=ste)


@dataclass(frozen=True, slots=True)
class Reply:
    """A parsed ``<mrs>`` (what a device reads back)."""

    ref: str
    snu: int
    ste: str | None


def read_reply(payload: bytes) -> Reply:
    """Parse an ``<mrs>``; raises DecodeError when ``ref`` or a numeric ``snu`` is missing."""
    fields, _, _ = _children(_root(payload, "mrs"))
    snu = _code(fields.get("snu", ""))
    if snu is None:
        raise DecodeError(CHANNEL, "element <snu>: missing or not a number")
    ste = fields.get("ste")
    return Reply(ref=_ref(fields), snu=snu, ste=None if ste is None else ste.strip())
