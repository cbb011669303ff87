"""Digital lock document v1: who unlocked, how, failures and battery, never a patient id."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.errors import DecodeError
from adapters.lock import decode
from adapters.model import DecodeContext, Event

CTX = DecodeContext()
AT = datetime(2024, 5, 2, 5, 2, 11, tzinfo=UTC)  # 07:02:11 CEST, the morning visit


def doc(kind: str, body: str = "") -> bytes:
    """A v1 lock document of ``kind`` at 07:02:11 CEST with the given body fields."""
    tail = f",{body}" if body else ""
    return f'{{"v":1,"type":"{kind}","at":"2024-05-02T07:02:11+02:00"{tail}}}'.encode()


@pytest.mark.parametrize(
    ("kind", "body", "data"),
    [
        # Constructed: home-care staff open with the app, the lock relocks by itself.
        ("unlocked", '"method":"app","credential":"hc-falun-0042","seq":551',
         {"method": "app", "credential": "hc-falun-0042", "seq": 551}),
        ("unlocked", '"method":"key","credential":"KEY-7F3A91"',
         {"method": "key", "credential": "KEY-7F3A91"}),
        ("unlocked", '"method":"code","credential":"slot:07"',
         {"method": "code", "credential": "slot:07"}),
        # The thumb-turn inside: the resident leaving; no credential to name.
        ("unlocked", '"method":"manual"', {"method": "manual"}),
        ("locked", '"method":"auto"', {"method": "auto"}),
        ("locked", "", {}),
        ("failed_attempt", '"method":"code","attempts":3', {"method": "code", "attempts": 3}),
        ("failed_attempt", '"method":"key","credential":"KEY-REVOKED-12"',
         {"method": "key", "credential": "KEY-REVOKED-12"}),
        ("battery", '"battery_percent":18', {"battery_percent": 18}),
    ],
)
def test_every_type_becomes_its_lock_event(kind: str, body: str, data: dict[str, Any]) -> None:
    assert decode(doc(kind, body), CTX) == [Event(f"lock.{kind}", AT, data)]


def test_unknown_fields_are_named_in_data() -> None:
    payload = doc("locked", '"method":"auto","door":"front"')
    assert decode(payload, CTX) == [
        Event("lock.locked", AT, {"method": "auto", "unknown_fields": ["door"]})
    ]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (doc("unlocked"), "method: required when type is 'unlocked'"),
        (doc("failed_attempt"), "method: required when type is 'failed_attempt'"),
        (doc("unlocked", '"method":"app"'),
         "credential: required when type is 'unlocked' and method is 'app'"),
        (doc("unlocked", '"method":"key"'),
         "credential: required when type is 'unlocked' and method is 'key'"),
        (doc("battery"), "battery_percent: required when type is 'battery'"),
        (doc("battery", '"battery_percent":-1'),
         "battery_percent: Input should be greater than or equal to 0 (got -1)"),
        (doc("unlocked", '"method":"bluetooth","credential":"x"'),
         "method: Input should be 'app', 'key', 'code', 'manual' or 'auto' (got 'bluetooth')"),
        (doc("failed_attempt", '"method":"code","attempts":0'),
         "attempts: Input should be greater than or equal to 1 (got 0)"),
        (doc("opened"), "type: Input should be 'locked', 'unlocked', 'failed_attempt' or "
                        "'battery' (got 'opened')"),
        # Personal identity and coordination numbers in every common shape are refused.
        (doc("unlocked", '"method":"app","credential":"19121212-1212"'),
         "credential: looks like a personal identity number; send the staff credential id "
         "(got '19121212-1212')"),
        (doc("unlocked", '"method":"app","credential":"1212121212"'),
         "credential: looks like a personal identity number; send the staff credential id "
         "(got '1212121212')"),
        (doc("unlocked", '"method":"app","credential":"121272+1212"'),
         "credential: looks like a personal identity number; send the staff credential id "
         "(got '121272+1212')"),
        (doc("unlocked", '"method":"app","credential":4711'),
         "credential: Input should be a valid string (got 4711)"),
        (doc("unlocked", '"method":"app","credential":"' + "k" * 65 + '"'),
         # The echoed input is cut to 40 characters to keep the reason one short line.
         f"credential: String should have at most 64 characters (got '{'k' * 36}...)"),
    ],
)
def test_lock_rejects_with_one_line_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(payload, CTX)
    assert (caught.value.channel, caught.value.reason) == ("lock", reason)
