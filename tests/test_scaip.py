"""SCAIP <mrq> requests from real social alarms, the event table, safety gates and <mrs> replies.

Captures are the ones quoted in the public Node.js ARC module ``scaip.js`` (comment blocks
"heartbeats" and "alarms"; PROTOCOLS.md §4) with their bytes unchanged, except that the
Essence caller id is replaced by a number PTS reserves for fiction (070-174 06 05).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event
from adapters.scaip import Reply, build_reply, decode, read_reply, reply, request_ref

CTX = DecodeContext()

ESSENCE_PI = (b"<mrq><ref>00001A85</ref><cha>0</cha><mty>PI</mty><cid>26317</cid><dty>02</dty>"
              b"<did>00</did><crd>no-voice:</crd><stc>102</stc></mrq>")
POSSUM_PI = b"<mrq><mty>PI</mty><ref>1998218577</ref><cid>10149471</cid><dty>2</dty></mrq>"
TELEALARM_PI = (b"<mrq><ref>v6l7eiuzBTfybE7j</ref><cid>999998</cid><dty>0002</dty><mty>PI</mty>"
                b"<stc>0009</stc><lco>002</lco><crd>gsm:</crd><cha>0</cha></mrq>")
ESSENCE_ME = (b"<mrq><ref>00001883</ref><cha>0</cha><mty>ME</mty><cid>26317</cid><dty>02</dty>"
              b"<did>00</did><crd>gsm:+46701740605</crd><stc>010</stc></mrq>")
POSSUM_PENDANT = (b"<mrq><ref>1193308443</ref><cid>10149471</cid><dty>3</dty><stc>10</stc>"
                  b"<crd>gsm:</crd></mrq>")
TELEALARM_FAULT = (b"<mrq><ref>lmepivnFqmI8Jvv1</ref><cid>999998</cid><dty>0002</dty><mty>ME</mty>"
                   b"<stc>0067</stc><crd>gsm:</crd><cha>0</cha></mrq>")
DORO = (b"<mrq><ref>803137200003</ref><mty>ME</mty><cid> 8031372</cid><dty>0004</dty>"
        b"<stc>0010</stc><crd>gsm:+</crd></mrq>")


def event(kind: str, raw: dict[str, str], **data: Any) -> Event:
    """An expected SCAIP event: no time (the request carries none), no location by default."""
    return Event(kind, None, {"location": None, "crd": [], **data, "raw": raw})


CAPTURES = [
    (ESSENCE_PI, event(
        "alarm.heartbeat",
        {"ref": "00001A85", "cha": "0", "mty": "PI", "cid": "26317", "dty": "02", "did": "00",
         "stc": "102"},
        ref="00001A85", cid="26317", mty="PI", dty=2, stc=102, did="00", cha=0,
        crd=["no-voice:"])),
    (POSSUM_PI, event(
        "alarm.heartbeat", {"mty": "PI", "ref": "1998218577", "cid": "10149471", "dty": "2"},
        ref="1998218577", cid="10149471", mty="PI", dty=2, stc=None)),
    # A heartbeat carrying stc 0009 (automatic alarm) is still a heartbeat: mty decides.
    (TELEALARM_PI, event(
        "alarm.heartbeat",
        {"ref": "v6l7eiuzBTfybE7j", "cid": "999998", "dty": "0002", "mty": "PI", "stc": "0009",
         "lco": "002", "cha": "0"},
        ref="v6l7eiuzBTfybE7j", cid="999998", mty="PI", dty=2, stc=9, lco=2, cha=0,
        crd=["gsm:"])),
    (ESSENCE_ME, event(
        "alarm.button",
        {"ref": "00001883", "cha": "0", "mty": "ME", "cid": "26317", "dty": "02", "did": "00",
         "stc": "010"},
        ref="00001883", cid="26317", mty="ME", dty=2, stc=10, did="00", cha=0,
        crd=["gsm:+46701740605"])),
    # No <mty>: ME is assumed (Node ARC defaults).
    (POSSUM_PENDANT, event(
        "alarm.button", {"ref": "1193308443", "cid": "10149471", "dty": "3", "stc": "10"},
        ref="1193308443", cid="10149471", mty="ME", dty=3, stc=10, crd=["gsm:"])),
    (TELEALARM_FAULT, event(
        "device.malfunction",
        {"ref": "lmepivnFqmI8Jvv1", "cid": "999998", "dty": "0002", "mty": "ME", "stc": "0067",
         "cha": "0"},
        ref="lmepivnFqmI8Jvv1", cid="999998", mty="ME", dty=2, stc=67, cha=0, crd=["gsm:"])),
    # Trap 10: " 8031372" and "0004"/"0010" are trimmed and read as integers.
    (DORO, event(
        "alarm.button",
        {"ref": "803137200003", "mty": "ME", "cid": " 8031372", "dty": "0004", "stc": "0010"},
        ref="803137200003", cid="8031372", mty="ME", dty=4, stc=10, crd=["gsm:+"])),
]


@pytest.mark.parametrize(("payload", "expected"), CAPTURES)
def test_device_captures_decode_to_whole_events(payload: bytes, expected: Event) -> None:
    assert decode(payload, CTX) == [expected]


@pytest.mark.parametrize("dty", ["4", "04", "0004", " 4", "0004 ", "\n\t0004\n"])
@pytest.mark.parametrize("stc", ["10", "010", "0010", " 0010 "])
def test_zero_padding_and_whitespace_compare_as_integers(dty: str, stc: str) -> None:
    payload = f"<mrq><ref>R1</ref><cid>7</cid><dty>{dty}</dty><stc>{stc}</stc></mrq>".encode()
    (result,) = decode(payload, CTX)
    assert (result.type, result.data["dty"], result.data["stc"]) == ("alarm.button", 4, 10)


@pytest.mark.parametrize(
    ("mty", "dty", "stc", "kind"),
    [
        ("PI", 2, None, "alarm.heartbeat"),
        ("RE", 3, "10", "alarm.reset"),
        ("IN", 2, "0070", "alarm.information"),
        ("ME", 3, None, "alarm.button"),  # stc omitted on ME means 10, manual alarm
        ("ME", 5, "0009", "alarm.fall"),
        ("ME", 30, "0009", "alarm.fall"),
        ("ME", 23, "0009", "alarm.smoke"),
        ("ME", 26, "0009", "alarm.carbon_monoxide"),
        ("ME", 51, "0010", "alarm.button"),
        ("ME", 11, "0081", "dispenser.dose_missed"),
        ("ME", 11, "0082", "dispenser.dose_due"),
        ("ME", 11, "0083", "dispenser.dose_taken"),
        ("ME", 5, "0016", "device.battery_low"),  # a status outranks the device type
        ("ME", 41, "0085", "device.power_lost"),
        ("ME", 2, "0019", "alarm.cancel"),
        ("ME", 2, "0102", "alarm.test"),
        ("ME", 2, "0125", "device.tamper"),
        ("ME", 11, "0010", "alarm.event"),  # manual alarm from a device with no alarm meaning
        ("ME", 2, "0999", "alarm.event"),
        ("ME", 2, "1O", "alarm.event"),  # unreadable stc: still delivered
        ("pi", 2, None, "alarm.heartbeat"),
    ],
)
def test_event_type_table(mty: str, dty: int, stc: str | None, kind: str) -> None:
    stc_xml = "" if stc is None else f"<stc>{stc}</stc>"
    payload = f"<mrq><ref>R</ref><mty>{mty}</mty><cid>7</cid><dty>{dty}</dty>{stc_xml}</mrq>"
    assert decode(payload.encode(), CTX)[0].type == kind


def test_unreadable_optional_codes_are_reported_not_fatal() -> None:
    payload = b"<mrq><ref>R9</ref><cid>7</cid><dty>3</dty><stc>1O</stc><lco>kitchen</lco></mrq>"
    expected = event(
        "alarm.event", {"ref": "R9", "cid": "7", "dty": "3", "stc": "1O", "lco": "kitchen"},
        ref="R9", cid="7", mty="ME", dty=3, stc=None,
        problems=["<stc>: expected a numeric code, got '1O'",
                  "<lco>: expected a numeric code, got 'kitchen'"])
    assert decode(payload, CTX) == [expected]


@pytest.mark.parametrize(
    ("lge", "location", "problems"),
    [
        ("<geo>59.3293,18.0686</geo><tim>2024-05-02T08:15:00+02</tim>",
         {"lat": Decimal("59.3293"), "lon": Decimal("18.0686"), "source": "geo",
          "time": "2024-05-02T08:15:00+02"}, None),
        ("<geo>geo:-33.8688,151.2093,12;u=35</geo>",
         {"lat": Decimal("-33.8688"), "lon": Decimal("151.2093"), "source": "geo"}, None),
        # The classic NMEA GGA example (checksum 47): 48°07.038' N, 11°31.000' E.
        ("<gga>$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47</gga>",
         {"lat": Decimal("48.1173000"), "lon": Decimal("11.5166667"), "source": "gga"}, None),
        ("<gga>$GPGGA,123519,4807.038,S,01131.000,W,1,08,0.9,545.4,M,46.9,M,,</gga>",
         {"lat": Decimal("-48.1173000"), "lon": Decimal("-11.5166667"), "source": "gga"}, None),
        ("<gga>$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48</gga>",
         None, ["<lge/gga>: checksum '48', computed 47"]),
        ("<gga>$GPGGA,123519,,,,,0,00,,,M,,M,,</gga>", None, ["<lge/gga>: no GPS fix (quality 0)"]),
        ("<geo>91.0,18.0</geo>", None, ["<lge/geo>: position 91.0,18.0 out of range"]),
        ("<gga>$GPGGA,1,9100.000,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,</gga>", None,
         ["<lge/gga>: position 91.0000000,11.5166667 out of range"]),
        ("<gga>$GPGGA,1,4875.000,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,</gga>", None,
         ["<lge/gga>: minutes 75.000 out of range"]),
        # A bad geo does not hide a good GGA sentence in the same <lge>.
        ("<geo>59,18,x</geo><gga>$GPGGA,1,5919.758,N,01804.116,E,1,8,,,M,,M,,</gga>",
         {"lat": Decimal("59.3293000"), "lon": Decimal("18.0686000"), "source": "gga"},
         ["<lge/geo>: expected 'lat,lon' in degrees, got '59,18,x'"]),
        ("<geo>home</geo>", None, ["<lge/geo>: expected 'lat,lon' in degrees, got 'home'"]),
    ],
)
def test_mobile_alarm_position(lge: str, location: dict[str, Any] | None,
                               problems: list[str] | None) -> None:
    payload = f"<mrq><ref>M1</ref><cid>7</cid><dty>51</dty><lco>035</lco><lge>{lge}</lge></mrq>"
    (result,) = decode(payload.encode(), CTX)
    assert (result.type, result.data["location"], result.data.get("problems")) == (
        "alarm.button", location, problems)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"<mrq><cid>7</cid><dty>3</dty></mrq>", "missing mandatory element <ref>"),
        (b"<mrq><ref>R</ref><dty>3</dty></mrq>", "missing mandatory element <cid>"),
        (b"<mrq><ref>R</ref><cid>7</cid></mrq>", "missing mandatory element <dty>"),
        (b"<mrq><ref> </ref><cid>7</cid><dty>3</dty></mrq>", "mandatory element <ref> is empty"),
        (b"<mrq><ref>R</ref><cid/><dty>3</dty></mrq>", "mandatory element <cid> is empty"),
        (b"<mrq><ref>R</ref><cid>7</cid><dty>pendant</dty></mrq>",
         "element <dty>: expected a numeric code, got 'pendant'"),
        (b"<mrq><ref>R</ref><cid>7</cid><dty>3</dty><mty>XX</mty></mrq>",
         "element <mty>: expected ME, RE, IN or PI, got 'XX'"),
        (b"<mrq><ref>R 1</ref><cid>7</cid><dty>3</dty></mrq>",
         "element <ref>: expected 1-64 printable ASCII, got 'R 1'"),
        (b"<mrq><ref>R</ref><cid>7</cid><cid>8</cid><dty>3</dty></mrq>",
         "element <cid> appears more than once"),
        (b"<mrq><ref>R</ref><cid>7</cid><dty>3</dty>",
         "malformed XML: no element found: line 1, column 41"),
        (b"<mrq><ref>R</cid></mrq>", "malformed XML: mismatched tag: line 1, column 13"),
        (b"<mrq>&bogus;</mrq>", "malformed XML: undefined entity: line 1, column 5"),
        (b"<mrq/><mrq/>", "malformed XML: junk after document element: line 1, column 6"),
        # Syntilio's divergent <scaip> variant (PROTOCOLS.md §4) is named, not guessed at.
        (b"<scaip><cid>+123456</cid><dty>0004</dty></scaip>",
         "expected root element <mrq>, got <scaip>"),
        (b"", "empty payload"),
        (b"  \r\n", "empty payload"),
        (b"<mrq><ref>R</ref><cid>7</cid><dty>3</dty><dte>K\xf6k</dte></mrq>",
         "payload is not UTF-8 (byte 47)"),
        (b"<mrq><ref>R</ref><cid>7</cid><dty>3</dty><dte>" + b"x" * 16384 + b"</dte></mrq>",
         "payload is 16442 bytes; the limit is 16384"),
    ],
)
def test_scaip_rejects_with_one_line_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(payload, CTX)
    assert (caught.value.channel, caught.value.reason) == ("scaip", reason)


@pytest.mark.parametrize(
    "payload",
    [
        # Billion laughs: refused before the parser can expand anything.
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        b"<mrq><ref>&lol2;</ref><cid>7</cid><dty>3</dty></mrq>",
        # External entity (XXE) reading a local file.
        b'<!DOCTYPE mrq [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b"<mrq><ref>R</ref><cid>&xxe;</cid><dty>3</dty></mrq>",
        b"<!doctype mrq><mrq><ref>R</ref><cid>7</cid><dty>3</dty></mrq>",
        b"<mrq><ref>R</ref><cid>7</cid><dty>3</dty><dte><!ENTITY x 'y'></dte></mrq>",
    ],
)
def test_doctype_and_entity_declarations_are_refused(payload: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(payload, CTX)
    assert caught.value.reason == "DOCTYPE and ENTITY declarations are refused"


def test_prolog_comments_namespace_and_repeated_crd_are_accepted() -> None:
    payload = (b'\n<?xml version="1.0" encoding="UTF-8"?>\n<mrq xmlns="urn:example:scaip">'
               b"<!-- from the field --><ref>R7</ref><cid>7</cid><dty>3</dty>"
               b"<crd>sip:7@alarm.example</crd><crd>gsm:+46701740605</crd><ref2>x</ref2></mrq>")
    expected = event("alarm.button", {"ref": "R7", "cid": "7", "dty": "3", "ref2": "x"},
                     ref="R7", cid="7", mty="ME", dty=3, stc=10,
                     crd=["sip:7@alarm.example", "gsm:+46701740605"])
    assert decode(payload, CTX) == [expected]


def test_reply_echoes_ref_with_ok_and_round_trips() -> None:
    answer = reply(DORO)
    assert answer == b"<mrs><ref>803137200003</ref><snu>0</snu></mrs>"
    assert read_reply(answer) == Reply(ref="803137200003", snu=0, ste=None)


def test_reply_to_a_rejected_request_still_echoes_its_ref() -> None:
    # cid missing: decode rejects it, but the device deserves snu 7 (mandatory tag missing).
    payload = b"<mrq><ref> ABC123 </ref><dty>3</dty></mrq>"
    with pytest.raises(DecodeError):
        decode(payload, CTX)
    assert request_ref(payload) == "ABC123"
    answer = reply(payload, 7, ste="missing <cid>")
    assert answer == b"<mrs><ref>ABC123</ref><snu>7</snu><ste>missing &lt;cid&gt;</ste></mrs>"
    assert read_reply(answer) == Reply(ref="ABC123", snu=7, ste="missing <cid>")


def test_reply_escapes_a_ref_that_arrived_escaped() -> None:
    payload = b"<mrq><ref>A&amp;B</ref><cid>7</cid><dty>3</dty></mrq>"
    assert reply(payload) == b"<mrs><ref>A&amp;B</ref><snu>0</snu></mrs>"


def test_reply_needs_a_ref_and_a_known_status_number() -> None:
    with pytest.raises(DecodeError) as caught:
        reply(b"<mrq><cid>7</cid><dty>3</dty></mrq>")
    assert caught.value.reason == "missing mandatory element <ref>"
    with pytest.raises(ValueError, match="8 is not a valid StatusNumber"):
        build_reply("R", 8)
    assert build_reply("R", 99) == b"<mrs><ref>R</ref><snu>99</snu></mrs>"


def test_read_reply_rejects_a_reply_without_status() -> None:
    with pytest.raises(DecodeError) as caught:
        read_reply(b"<mrs><ref>R</ref></mrs>")
    assert caught.value.reason == "element <snu>: missing or not a number"
