"""The fast PUBLISH decoder gives what paho's own decoder gives, and refuses what it refuses.

Every case is a whole packet body (after the fixed header) decoded twice: by
``gateway.mqtt_publish.decode_publish`` and by paho's ``_packet.decode_publish``. Topic,
packet id, flags, payload and every property must match; where paho raises
``MalformedPacket``, so must ours. A round trip through Mosquitto then shows hub user
properties arriving intact at a client that uses the decoder.
"""

from __future__ import annotations

import struct
import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt import _packet
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.mqtt import new_client
from gateway.mqtt_publish import ReceivedProperties, decode_publish
from gateway.services.mosquitto import MosquittoProcess


def _utf8(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(raw)) + raw


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _body(topic: bytes, payload: bytes, *, mid: int | None = 7,
          props: bytes | None = b"") -> bytes:
    """A PUBLISH body: topic, packet id (QoS > 0), properties (MQTT 5), payload."""
    out = _utf8(topic)
    if mid is not None:
        out += struct.pack("!H", mid)
    if props is not None:
        out += _varint(len(props)) + props
    return out + payload


def _user(key: str | bytes, value: str | bytes) -> bytes:
    return b"\x26" + _utf8(key) + _utf8(value)


def _props_of(message: Any) -> dict[str, Any]:
    props = message.properties
    if props is None:
        return {}
    return {name.replace(" ", ""): getattr(props, name.replace(" ", ""))
            for name in props.names if hasattr(props, name.replace(" ", ""))}


def _both(header: int, body: bytes, *, mqtt5: bool) -> tuple[Any, Any]:
    protocol = mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311
    outcomes: list[Any] = []
    for decode in (lambda: decode_publish(header, bytearray(body), mqtt5=mqtt5),
                   lambda: _packet.decode_publish(header, bytearray(body), protocol)):
        try:
            outcomes.append(decode())
        except MalformedPacket as exc:
            outcomes.append(exc)
    return outcomes[0], outcomes[1]


_QOS1 = 0x32  # PUBLISH, QoS 1
_GOOD = [
    ("no properties", _QOS1, _body(b"aidlink/v1/d1/up/ble/2a35", b"\x00\x01")),
    ("qos 0 has no packet id", 0x30, _body(b"t/x", b"abc", mid=None)),
    ("dup and retain", 0x3B, _body(b"t/y", b"", mid=65535)),
    ("hub user properties", _QOS1, _body(
        b"aidlink/v1/hub/up/ble/2a35", b"\x16\x80\x00",
        props=_user("received-at", "2026-11-22T10:00:00Z") + _user("seq", "41"))),
    ("repeated and non-ASCII keys", _QOS1, _body(
        b"t/\xc3\xa5", b"x", props=_user("seq", "1") + _user("seq", "2") + _user("nå", "ö"))),
    ("empty user property", _QOS1, _body(b"t", b"p", props=_user("", ""))),
    ("other properties fall back", _QOS1, _body(
        b"t/z", b"{}", props=b"\x01\x01" + b"\x02\x00\x00\x00\x3c" + b"\x03" + _utf8("a/b")
        + _user("seq", "3") + b"\x09" + _utf8(b"\x00\xff"))),
    ("topic alias with empty topic", _QOS1, _body(b"", b"p", props=b"\x23\x00\x05")),
    ("long properties length", _QOS1, _body(b"t", b"p", props=_user("k" * 100, "v" * 100))),
]
_BAD = [
    ("too short for topic length", _QOS1, b"\x00"),
    ("topic longer than packet", _QOS1, b"\x00\x09abc"),
    ("no packet id", _QOS1, _utf8(b"t") + b"\x00"),
    ("properties longer than packet", _QOS1, _utf8(b"t") + b"\x00\x07" + b"\x10" + _user("a", "b")),
    ("string longer than properties", _QOS1, _utf8(b"t") + b"\x00\x07\x04\x26\x00\x09ab"),
    ("null in user property", _QOS1, _body(b"t", b"", props=_user("a\x00", "b"))),
    ("BOM in user property", _QOS1, _body(b"t", b"", props=_user("a", "\ufeff"))),
    ("surrogate in user property", _QOS1, _body(b"t", b"", props=_user(b"\xed\xa0\x80", "b"))),
    ("invalid UTF-8 in user property", _QOS1, _body(b"t", b"", props=_user(b"\xff", "b"))),
    ("unknown property after user property", _QOS1,
     _body(b"t", b"", props=_user("a", "b") + b"\x7e\x00")),
    ("property repeated that must not be", _QOS1, _body(b"t", b"", props=b"\x01\x00\x01\x01")),
    ("varint of five bytes", _QOS1, _utf8(b"t") + b"\x00\x07\xff\xff\xff\xff\x01"),
]


def _same(ours: Any, theirs: Any) -> None:
    if isinstance(theirs, MalformedPacket):
        assert isinstance(ours, MalformedPacket), f"paho refused ({theirs}); we accepted"
        return
    assert not isinstance(ours, MalformedPacket), f"we refused ({ours}); paho accepted"
    assert ours._topic == theirs.topic
    assert ours.mid == theirs.mid
    assert (ours.dup, ours.qos, ours.retain) == (theirs.dup, theirs.qos, theirs.retain)
    assert type(ours.payload) is bytes
    assert ours.payload == bytes(theirs.payload)
    assert _props_of(ours) == _props_of(theirs)
    # paho's MQTTMessageInfo is made only when asked for, with the message's id, and kept.
    assert isinstance(ours, mqtt.MQTTMessage)
    assert ours.info.mid == ours.mid
    assert ours.info is ours.info


@pytest.mark.parametrize(("header", "body"), [case[1:] for case in _GOOD],
                         ids=[case[0] for case in _GOOD])
def test_decodes_as_paho_does(header: int, body: bytes) -> None:
    ours, theirs = _both(header, body, mqtt5=True)
    assert not isinstance(theirs, MalformedPacket), f"a good case paho refuses: {theirs}"
    _same(ours, theirs)


@pytest.mark.parametrize("header", [_QOS1, 0x30, 0x3B])
def test_decodes_mqtt311_as_paho_does(header: int) -> None:
    mid = 9 if header & 0x06 else None
    ours, theirs = _both(header, _body(b"a/b", b"\x00payload", mid=mid, props=None),
                         mqtt5=False)
    assert not isinstance(theirs, MalformedPacket)
    assert ours.properties is None
    _same(ours, theirs)


@pytest.mark.parametrize(("header", "body"), [case[1:] for case in _BAD],
                         ids=[case[0] for case in _BAD])
def test_refuses_what_paho_refuses(header: int, body: bytes) -> None:
    ours, theirs = _both(header, body, mqtt5=True)
    assert isinstance(theirs, MalformedPacket), "the case must be malformed for paho too"
    _same(ours, theirs)


def test_empty_topic_refused_in_mqtt311() -> None:
    ours, theirs = _both(_QOS1, _body(b"", b"p", props=None), mqtt5=False)
    assert isinstance(theirs, MalformedPacket)
    assert isinstance(ours, MalformedPacket)


def test_received_properties_behave_as_paho_properties() -> None:
    props: Any = decode_publish(_QOS1, _body(b"t", b"", props=_user("seq", "9")),
                                mqtt5=True).properties
    kind = type(props)
    assert kind is ReceivedProperties and issubclass(kind, Properties)
    assert props.UserProperty == [("seq", "9")]
    assert props.json() == {"UserProperty": [("seq", "9")]}
    assert not props.isEmpty()
    bare: Any = decode_publish(_QOS1, _body(b"t", b""), mqtt5=True).properties
    assert bare is not None and bare.isEmpty()
    assert getattr(bare, "UserProperty", None) is None
    # The shared tables are paho's and stay untouched by instances.
    assert "UserProperty" not in ReceivedProperties.__dict__


def test_user_properties_through_mosquitto(mosquitto: MosquittoProcess) -> None:
    got: list[mqtt.MQTTMessage] = []
    done, subscribed = threading.Event(), threading.Event()
    receiver = new_client("publish-decoder-rx", protocol=5)
    receiver.on_subscribe = lambda *args: subscribed.set()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        got.append(msg)
        if len(got) == 3:
            done.set()

    receiver.on_message = on_message
    receiver.on_connect = lambda client, userdata, flags, rc, props: client.subscribe(
        "dec/#", qos=1)
    receiver.connect(mosquitto.host, mosquitto.port)
    receiver.loop_start()
    sender = new_client("publish-decoder-tx", protocol=5)
    sender.connect(mosquitto.host, mosquitto.port)
    sender.loop_start()
    try:
        assert subscribed.wait(10), "the receiver never subscribed"
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = [("received-at", "2026-11-22T10:00:00Z"), ("seq", "17")]
        extra = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        extra.ContentType = "application/json"
        extra.UserProperty = [("seq", "18")]
        sender.publish("dec/a", b"\x01\x02", qos=1, properties=props).wait_for_publish(5)
        sender.publish("dec/b", b"", qos=1).wait_for_publish(5)
        sender.publish("dec/c", b"{}", qos=1, properties=extra).wait_for_publish(5)
        assert done.wait(10), f"the receiver got {len(got)} of 3 messages"
        by_topic: dict[str, Any] = {m.topic: m for m in got}
        assert by_topic["dec/a"].payload == b"\x01\x02"
        assert by_topic["dec/a"].properties.UserProperty == [
            ("received-at", "2026-11-22T10:00:00Z"), ("seq", "17")]
        assert getattr(by_topic["dec/b"].properties, "UserProperty", None) is None
        assert by_topic["dec/c"].properties.ContentType == "application/json"
        assert by_topic["dec/c"].properties.UserProperty == [("seq", "18")]
    finally:
        for client in (sender, receiver):
            client.loop_stop()
            client.disconnect()
