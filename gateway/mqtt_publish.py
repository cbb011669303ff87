"""Decoding of received PUBLISH packets, with paho's results at a fraction of its cost.

paho decodes every received PUBLISH with ``struct`` format strings built per packet, and in
MQTT 5 builds a new ``Properties`` object whose constructor fills three lookup tables, then
parses the properties one ``setattr`` at a time, each a linear search of those tables. At a
few thousand messages a second that was a fifth of the gateway's CPU. This module reads the
same wire layout directly and gives paho's own types back (``MQTTMessage``, ``Properties``).

Wire layout of what follows the fixed header (MQTT 3.1.1 §3.3.2, MQTT 5.0 §3.3.2):

    topic name        2-byte big-endian length, then that many bytes of UTF-8
    packet identifier 2 bytes big-endian, only when QoS > 0
    properties        MQTT 5 only: a Variable Byte Integer length, then that many bytes of
                      (identifier, value) pairs; a user property (0x26) is two UTF-8
                      strings, each with a 2-byte length
    payload           the rest

Only user properties, the ones hubs send, take the fast path; a packet with any other
property is decoded by paho's own ``Properties.unpack``.
"""

from __future__ import annotations

import struct
from typing import Any

from paho.mqtt.client import MQTTMessage, MQTTMessageInfo, mqtt_ms_invalid
from paho.mqtt.exception import MalformedPacket, MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["ReceivedMessage", "ReceivedProperties", "decode_publish"]

USER_PROPERTY = 0x26
# MQTT-1.5.4-2 and MQTT-1.5.4-3: a UTF-8 string must not hold U+0000 or U+FEFF. Python's
# strict UTF-8 decoder already refuses the surrogates D800-DFFF (MQTT-1.5.4-1).
_FORBIDDEN = ("\x00", "\ufeff")

# What paho's own decoders turn into MalformedPacket (paho.mqtt._packet.DECODE_ERRORS).
_DECODE_ERRORS = (struct.error, IndexError, KeyError, ValueError, MQTTException)

_TABLES = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]


class ReceivedProperties(Properties):
    """A received PUBLISH packet's properties, as paho's ``Properties``.

    paho's constructor builds its name and type tables for every instance; they never
    change, so here they are the class's, shared by every instance."""

    names = _TABLES.names
    types = _TABLES.types
    properties = _TABLES.properties

    def __init__(self, user: list[tuple[str, str]]) -> None:
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        if user:
            object.__setattr__(self, "UserProperty", user)


# The slot in which paho keeps a message's MQTTMessageInfo (a member descriptor).
_INFO: Any = MQTTMessage.__dict__["info"]


class ReceivedMessage(MQTTMessage):
    """A received message, as paho's ``MQTTMessage`` but made without an ``MQTTMessageInfo``.

    paho gives every message one, with a ``threading.Condition`` inside: it tracks the
    publishing of a message this client sends, and nothing reads it on a received one. It
    is made only if asked for."""

    __slots__ = ()

    def __init__(self, mid: int, topic: bytes) -> None:
        self.timestamp = 0.0
        self.state = mqtt_ms_invalid
        self.dup = False
        self.mid = mid
        self._topic = topic
        self.payload = b""
        self.qos = 0
        self.retain = False
        self.properties = None

    @property
    def info(self) -> MQTTMessageInfo:
        try:
            made: MQTTMessageInfo = _INFO.__get__(self, MQTTMessage)
        except AttributeError:
            made = MQTTMessageInfo(self.mid)
            _INFO.__set__(self, made)
        return made

    @info.setter
    def info(self, value: MQTTMessageInfo) -> None:
        _INFO.__set__(self, value)


def _utf8(packet: bytes | bytearray, pos: int, end: int) -> tuple[str, int]:
    """The UTF-8 string at ``pos``, which must end by ``end``; and the position after it."""
    if pos + 2 > end:
        raise MalformedPacket("Not enough data to read string length")
    stop = pos + 2 + (packet[pos] << 8 | packet[pos + 1])
    if stop > end:
        raise MalformedPacket("Length delimited string too long")
    try:
        text = packet[pos + 2:stop].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket(f"invalid UTF-8: {exc}") from exc
    for char in _FORBIDDEN:
        if char in text:
            raise MalformedPacket(f"U+{ord(char):04X} found in UTF-8 data")
    return text, stop


def _variable_int(packet: bytes | bytearray, pos: int) -> tuple[int, int]:
    """A Variable Byte Integer (MQTT 5.0 §1.5.5): 7 bits a byte, low first, at most four."""
    value = shift = 0
    for count in range(4):
        if pos + count >= len(packet):
            raise MalformedPacket("Variable Byte Integer cut short")
        byte = packet[pos + count]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + count + 1
        shift += 7
    raise MalformedPacket("Variable Byte Integer longer than four bytes")


def _properties(packet: bytes | bytearray, pos: int) -> tuple[Properties, int]:
    """The properties at ``pos``, and the position of the payload."""
    length, start = _variable_int(packet, pos)
    end = start + length
    if end > len(packet):
        raise MalformedPacket("Properties longer than the packet")
    user: list[tuple[str, str]] = []
    at = start
    while at < end:
        if packet[at] != USER_PROPERTY:
            full = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            try:
                full.unpack(packet[pos:end])  # type: ignore[no-untyped-call]
            except MalformedPacket:
                raise
            except _DECODE_ERRORS as exc:
                raise MalformedPacket(f"bad PUBLISH properties: {exc}") from exc
            return full, end
        key, at = _utf8(packet, at + 1, end)
        value, at = _utf8(packet, at, end)
        user.append((key, value))
    return ReceivedProperties(user), end


def decode_publish(header: int, packet: bytes | bytearray, *, mqtt5: bool) -> MQTTMessage:
    """The message in a PUBLISH packet; ``header`` is the fixed header's first byte and
    ``packet`` everything after the remaining length. Raises ``MalformedPacket``."""
    qos = (header & 0x06) >> 1
    if len(packet) < 2:
        raise MalformedPacket("PUBLISH too short for its topic length")
    pos = 2 + (packet[0] << 8 | packet[1])
    if pos > len(packet):
        raise MalformedPacket("PUBLISH topic longer than the packet")
    topic = packet[2:pos]
    if not mqtt5 and not topic:
        raise MalformedPacket("topic can't be empty in MQTTv3")
    mid = 0
    if qos > 0:
        if pos + 2 > len(packet):
            raise MalformedPacket("PUBLISH too short for its packet identifier")
        mid = packet[pos] << 8 | packet[pos + 1]
        pos += 2
    message = ReceivedMessage(mid, bytes(topic))
    message.dup = bool(header & 0x08)
    message.qos = qos
    message.retain = bool(header & 0x01)
    if mqtt5:
        message.properties, pos = _properties(packet, pos)
    message.payload = bytes(packet[pos:])
    return message
