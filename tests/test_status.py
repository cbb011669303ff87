"""Device status document v1: battery, signal, firmware, uptime and clock as device.status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event
from adapters.status import decode

AT = datetime(2024, 5, 2, 1, 0, tzinfo=UTC)  # 03:00 CEST, the nightly report
CTX = DecodeContext()
# Constructed: a hub's nightly status with every field.
FULL = (
    b'{"v":1,"type":"device_status","at":"2024-05-02T03:00:00+02:00","seq":88,'
    b'"battery_percent":76,"rssi_dbm":-71,"firmware":"2.4.1-se","uptime_s":1209600,'
    b'"clock":{"synced":true,"source":"ntp"}}'
)
FULL_DATA = {
    "battery_percent": 76,
    "rssi_dbm": -71,
    "firmware": "2.4.1-se",
    "uptime_s": 1209600,
    "clock": {"synced": True, "source": "ntp"},
    "seq": 88,
}


def doc(body: str) -> bytes:
    """A v1 status document at 03:00 CEST with the given body fields."""
    return f'{{"v":1,"type":"device_status","at":"2024-05-02T03:00:00+02:00",{body}}}'.encode()


def test_full_status_without_receive_time_has_no_skew() -> None:
    assert decode(FULL, CTX) == [Event("device.status", AT, FULL_DATA)]


@pytest.mark.parametrize(
    ("received", "skew"),
    [
        (AT, 0),
        (AT + timedelta(seconds=95), -95),  # device clock 95 s behind the hub
        (AT - timedelta(minutes=10), 600),  # device clock 10 min ahead
        (AT + timedelta(milliseconds=400), 0),  # rounded to whole seconds
    ],
)
def test_clock_skew_is_device_time_minus_receive_time(received: datetime, skew: int) -> None:
    result = decode(FULL, DecodeContext(received_at=received))
    assert result == [Event("device.status", AT, {**FULL_DATA, "clock_skew_s": skew})]


def test_naive_receive_time_gives_no_skew_rather_than_a_guess() -> None:
    ctx = DecodeContext(received_at=datetime(2024, 5, 2, 1, 0))
    assert decode(FULL, ctx) == [Event("device.status", AT, FULL_DATA)]


@pytest.mark.parametrize(
    ("body", "data"),
    [
        ('"battery_percent":0', {"battery_percent": 0}),
        ('"rssi_dbm":-150', {"rssi_dbm": -150}),
        ('"firmware":"1.0"', {"firmware": "1.0"}),
        ('"uptime_s":0', {"uptime_s": 0}),
        ('"clock":{"synced":false}', {"clock": {"synced": False}}),
        ('"clock":{"synced":true,"source":"gnss","drift_ppm":3}',
         {"clock": {"synced": True, "source": "gnss"}, "unknown_fields": ["clock.drift_ppm"]}),
    ],
)
def test_one_status_field_is_enough_and_only_sent_fields_appear(
    body: str, data: dict[str, object]
) -> None:
    assert decode(doc(body), CTX) == [Event("device.status", AT, data)]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (doc('"seq":1'),
         "no status field: send one of battery_percent, rssi_dbm, firmware, uptime_s, clock"),
        (doc('"battery_percent":null,"firmware":null'),
         "no status field: send one of battery_percent, rssi_dbm, firmware, uptime_s, clock"),
        (doc('"battery_percent":101'),
         "battery_percent: Input should be less than or equal to 100 (got 101)"),
        (doc('"rssi_dbm":-151'),
         "rssi_dbm: Input should be greater than or equal to -150 (got -151)"),
        (doc('"uptime_s":-1'), "uptime_s: Input should be greater than or equal to 0 (got -1)"),
        (doc('"clock":{"synced":"yes"}'),
         "clock.synced: Input should be a valid boolean (got 'yes')"),
        (doc('"clock":{"synced":1}'), "clock.synced: Input should be a valid boolean (got 1)"),
        (doc('"clock":{"source":"ntp"}'), "clock.synced: field required"),
        (doc('"clock":{"synced":true,"source":"sundial"}'),
         "clock.source: Input should be 'ntp', 'gnss', 'cellular', 'ble', 'manual' or 'none' "
         "(got 'sundial')"),
        (doc('"firmware":""'), "firmware: String should have at least 1 character (got '')"),
        (b'{"v":1,"type":"status","at":"2024-05-02T03:00:00Z","uptime_s":5}',
         "type: Input should be 'device_status' (got 'status')"),
        (b'{"v":1,"type":"device_status","at":"9999-12-31T23:59:59-01:00","uptime_s":5}',
         "at: not a valid date-time (got '9999-12-31T23:59:59-01:00')"),
    ],
)
def test_status_rejects_with_one_line_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(payload, CTX)
    assert (caught.value.channel, caught.value.reason) == ("status", reason)
