"""Glucose Measurement Context (0x2A34): JDRF packets, the Nordic layout, units and specials."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from adapters.ble_glucose_context import decode
from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event, dumps

CTX = DecodeContext(zone=ZoneInfo("Europe/Stockholm"))

# Nordic GlucoseMeasurementContextDataCallbackTest _full layout: flags 0xff, seq 0, extended
# flags 0xb3, dinner with carbohydrate, casual, health care professional with minor issues,
# 60 s at 50 %, long acting insulin (b5: litres), HbA1c. Nordic's MutableData float encoding
# is not ours, so the SFLOATs here are 100 g (0xD064 = 100e-3 kg), 123 mL (0xD07B) and
# 34.5 % (0xF159).
NORDIC_FULL = bytes.fromhex("ff0000b30364d004123c0032047bd059f1")


def context(data: dict[str, Any]) -> Event:
    """An expected ``glucose.context`` event."""
    return Event(type="glucose.context", occurred_at=None, data=data)


def amount(kind: str, value: str | None, unit: str, absent: str | None = None) -> dict[str, Any]:
    """An expected carbohydrate or medication entry."""
    return {"kind": kind, "amount": None if value is None else Decimal(value), "unit": unit,
            "absent_reason": absent}


@pytest.mark.parametrize(
    ("hex_payload", "expected"),
    [
        # markiantorno/JDRFAndroidBLEParser GlucoseMeasurementContextCharacteristicTest,
        # packet 1: flags 0x84, seq 1, extended flags 187, self, no health issues.
        ("840100bb51", {"sequence": 1, "extended_flags": 187, "tester": "self",
                        "health": "no_health_issues", "flags": []}),
        # Packet 2: snack 0xD072 = 114e-3 kg = 114 g (JDRF's constant says 0.1114 kg; the
        # bytes say 0.114), casual, self during menses, intermediate acting insulin
        # 0xA05D = 93e-6 kg = 93 mg.
        ("97 0600 d3 04 72d0 04 31 03 5da0",
         {"sequence": 6, "extended_flags": 211, "carbohydrate": amount("snack", "114", "g"),
          "meal": "casual", "tester": "self", "health": "during_menses",
          "medication": amount("intermediate_acting_insulin", "93", "mg"), "flags": []}),
        # Packet 3: fasting, lab test, 2221 s at 7 %, HbA1c 7 %.
        ("ce 0700 69 03 53 ad08 07 0700",
         {"sequence": 7, "extended_flags": 105, "meal": "fasting", "tester": "lab_test",
          "health": "no_health_issues", "exercise": {"duration_s": 2221, "intensity_percent": 7},
          "hba1c": {"value": Decimal(7), "unit": "%", "absent_reason": None}, "flags": []}),
        # Packet 4: bedtime, pre-mixed insulin 0xD050 = 80e-3 L = 80 mL (b5 litres).
        ("b6 0900 07 05 51 05 50d0",
         {"sequence": 9, "extended_flags": 7, "meal": "bedtime", "tester": "self",
          "health": "no_health_issues", "medication": amount("pre_mixed_insulin", "80", "mL"),
          "flags": []}),
        # Packet 5: everything but exercise; 117 g, 29 mg, HbA1c 7 %.
        ("d70a00e90475d00451051da00700",
         {"sequence": 10, "extended_flags": 233, "carbohydrate": amount("snack", "117", "g"),
          "meal": "casual", "tester": "self", "health": "no_health_issues",
          "medication": amount("pre_mixed_insulin", "29", "mg"),
          "hba1c": {"value": Decimal(7), "unit": "%", "absent_reason": None}, "flags": []}),
    ],
)
def test_context_jdrf_packets(hex_payload: str, expected: dict[str, Any]) -> None:
    assert decode(bytes.fromhex(hex_payload), CTX) == [context(expected)]


def test_context_nordic_full_layout() -> None:
    expected = {
        "sequence": 0, "extended_flags": 0xB3, "carbohydrate": amount("dinner", "100", "g"),
        "meal": "casual", "tester": "health_care_professional", "health": "minor_health_issues",
        "exercise": {"duration_s": 60, "intensity_percent": 50},
        "medication": amount("long_acting_insulin", "123", "mL"),
        "hba1c": {"value": Decimal("34.5"), "unit": "%", "absent_reason": None},
        "flags": ["implausible"],  # HbA1c 34.5 % is outside 3-20 %
    }
    assert decode(NORDIC_FULL, CTX) == [context(expected)]


def test_context_nordic_empty_with_sequence_only() -> None:
    # Nordic _empty sends 17 bytes with flags 0: the rest is trailing.
    payload = bytes.fromhex("000100") + bytes(14)
    assert decode(payload, CTX) == [context({"sequence": 1, "flags": ["trailing_bytes"]})]


def test_context_overrun_reserved_values_and_specials() -> None:
    # Constructed: flags 0x0b; carbohydrate id 9 (reserved) with NaN, meal 6 (reserved),
    # exercise 0xFFFF (overrun) at 20 %.
    payload = bytes.fromhex("0b2a0009ff0706ffff14")
    expected = {"sequence": 42, "carbohydrate": amount("rfu:9", None, "g", "not-a-number"),
                "meal": "rfu:6", "exercise": {"duration_s": None, "intensity_percent": 20},
                "flags": ["exercise_overrun"]}
    assert decode(payload, CTX) == [context(expected)]


@pytest.mark.parametrize(
    ("hex_payload", "reason"),
    [
        ("", "payload is 0 bytes; a context needs at least 3"),
        # Nordic onInvalidDataReceived: 5 bytes with flags 0xff.
        ("ff0000b303", "payload is 5 bytes but flags 0xff (extended flags, carbohydrate, meal, "
                       "tester-health, exercise, medication, HbA1c) need 17"),
        ("40010007", "payload is 4 bytes but flags 0x40 (HbA1c) need 5"),
    ],
)
def test_context_rejects_with_one_line_reason(hex_payload: str, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(bytes.fromhex(hex_payload), CTX)
    assert (caught.value.channel, caught.value.reason) == ("ble/2a34", reason)


def test_context_every_prefix_of_nordic_full_is_rejected() -> None:
    for size in range(len(NORDIC_FULL)):
        with pytest.raises(DecodeError):
            decode(NORDIC_FULL[:size], CTX)


def test_context_json() -> None:
    assert dumps(decode(bytes.fromhex("b6 0900 07 05 51 05 50d0"), CTX)[0].to_json()) == (
        '{"kind":"event","type":"glucose.context","occurred_at":null,"data":{"sequence":9,'
        '"extended_flags":7,"meal":"bedtime","tester":"self","health":"no_health_issues",'
        '"medication":{"kind":"pre_mixed_insulin","amount":80,"unit":"mL",'
        '"absent_reason":null},"flags":[]}}'
    )
