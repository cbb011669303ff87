"""Medication dispenser document v1: the PROTOCOLS.md §6 vocabulary as canonical events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, get_args

import pytest

from adapters.dispenser import DEVICE_TYPES, DOSE_TYPES, DispenserType, decode
from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event, dumps

CTX = DecodeContext()
AT = datetime(2024, 5, 2, 6, 45, tzinfo=UTC)  # 08:45 CEST
DOSE = '"dose":{"id":"D-20240502-0800","scheduled_at":"2024-05-02T08:00:00+02:00"'
DOSE_DATA = {"dose_id": "D-20240502-0800", "scheduled_at": "2024-05-02T06:00:00Z"}


def doc(kind: str, body: str = "") -> bytes:
    """A v1 dispenser document of ``kind`` at 08:45 CEST with the given body fields."""
    tail = f",{body}" if body else ""
    return f'{{"v":1,"type":"{kind}","at":"2024-05-02T08:45:00+02:00"{tail}}}'.encode()


def test_vocabulary_is_the_dose_lifecycle_then_device_state() -> None:
    assert get_args(DispenserType) == DOSE_TYPES + DEVICE_TYPES


def test_dose_missed_with_compartment_remaining_and_seq() -> None:
    # Constructed: an Evondos-style robot reports the 08:00 bag not taken at 08:45 and
    # locked away in compartment 14, 12 doses left.
    payload = doc("dose_missed", DOSE + ',"compartment":14},"remaining_doses":12,"seq":9031')
    expected = Event(
        type="dispenser.dose_missed",
        occurred_at=AT,
        data={**DOSE_DATA, "compartment": 14, "remaining_doses": 12, "seq": 9031},
    )
    assert decode(payload, CTX) == [expected]
    assert dumps(expected.to_json()) == (
        '{"kind":"event","type":"dispenser.dose_missed","occurred_at":"2024-05-02T06:45:00Z",'
        '"data":{"dose_id":"D-20240502-0800","scheduled_at":"2024-05-02T06:00:00Z",'
        '"compartment":14,"remaining_doses":12,"seq":9031}}'
    )


@pytest.mark.parametrize(
    ("kind", "body", "data"),
    [
        ("dose_due", DOSE + "}", DOSE_DATA),
        ("dose_dispensed", DOSE + "}", DOSE_DATA),
        ("dose_taken", DOSE + '},"confirmation":"button"', {**DOSE_DATA, "confirmation": "button"}),
        ("dose_late", DOSE + "}", DOSE_DATA),
        ("dose_missed", DOSE + "}", DOSE_DATA),
        ("dose_skipped", DOSE + '},"reason":"hospital stay"',
         {**DOSE_DATA, "reason": "hospital stay"}),
        ("supply_low", '"remaining_doses":6', {"remaining_doses": 6}),
        ("supply_empty", "", {}),
        ("door_opened", '"credential":"staff-4711"', {"credential": "staff-4711"}),
        ("tamper", "", {}),
        ("jam", '"fault_code":"E12 cup jam"', {"fault_code": "E12 cup jam"}),
        ("power_lost", '"battery_percent":100', {"battery_percent": 100}),
        ("power_restored", '"battery_percent":64', {"battery_percent": 64}),
        ("offline", "", {}),
        ("online", "", {}),
    ],
)
def test_every_type_becomes_its_dispenser_event(kind: str, body: str, data: dict[str, Any]) -> None:
    assert decode(doc(kind, body), CTX) == [Event(f"dispenser.{kind}", AT, data)]


def test_unknown_fields_are_kept_out_of_data_but_named() -> None:
    payload = doc("dose_due", DOSE + ',"tray":"A"},"volume":3')
    unknown = {"unknown_fields": ["dose.tray", "volume"]}
    expected = Event("dispenser.dose_due", AT, {**DOSE_DATA, **unknown})
    assert decode(payload, CTX) == [expected]


def test_explicit_null_counts_as_absent() -> None:
    payload = doc("supply_empty", '"remaining_doses":null,"reason":null')
    assert decode(payload, CTX) == [Event("dispenser.supply_empty", AT, {})]


@pytest.mark.parametrize("kind", DOSE_TYPES)
def test_dose_types_need_the_dose(kind: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(doc(kind), CTX)
    assert caught.value.reason == f"dose: required when type is '{kind}'"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (doc("supply_low"), "remaining_doses: required when type is 'supply_low'"),
        (doc("dose_eaten", DOSE + "}"),
         "type: Input should be 'dose_due', 'dose_dispensed', 'dose_taken', 'dose_late', "
         "'dose_missed', 'dose_skipped', 'supply_low', 'supply_empty', 'door_opened', 'tamper', "
         "'jam', 'power_lost', 'power_restored', 'offline' or 'online' (got 'dose_eaten')"),
        (doc("dose_due", '"dose":{"id":"D1","scheduled_at":"2024-05-02T08:00:00"}'),
         "dose.scheduled_at: expected an RFC 3339 date-time with offset, e.g. "
         "2024-05-02T08:15:00Z (got '2024-05-02T08:00:00')"),
        (doc("dose_due", '"dose":{"scheduled_at":"2024-05-02T08:00:00Z"}'),
         "dose.id: field required"),
        (doc("dose_due", '"dose":{"id":"","scheduled_at":"2024-05-02T08:00:00Z"}'),
         "dose.id: String should have at least 1 character (got '')"),
        (doc("dose_due", DOSE + ',"compartment":-1}'),
         "dose.compartment: Input should be greater than or equal to 0 (got -1)"),
        (doc("dose_due", '"dose":"D1"'),
         "dose: Input should be a valid dictionary or instance of Dose (got 'D1')"),
        (doc("dose_taken", DOSE + '},"confirmation":"camera"'),
         "confirmation: Input should be 'button', 'sensor' or 'staff' (got 'camera')"),
        (doc("power_lost", '"battery_percent":101'),
         "battery_percent: Input should be less than or equal to 100 (got 101)"),
        (doc("supply_low", '"remaining_doses":6.0'),
         "remaining_doses: Input should be a valid integer (got Decimal('6.0'))"),
        (doc("jam", '"fault_code":"E12\\njam"'),
         "fault_code: control characters are not allowed (got 'E12\\njam')"),
        (doc("door_opened", '"credential":"staff 4711"'),
         "credential: expected printable ASCII without spaces (got 'staff 4711')"),
        # A personal identity number in the credential field is refused, never stored.
        (doc("door_opened", '"credential":"191212121212"'),
         "credential: looks like a personal identity number; send the staff credential id "
         "(got '191212121212')"),
        (doc("door_opened", '"credential":"121212-1212"'),
         "credential: looks like a personal identity number; send the staff credential id "
         "(got '121212-1212')"),
        (b'{"v":3,"type":"dose_due"}', "unsupported document version 3 (supported: 1)"),
    ],
)
def test_dispenser_rejects_with_one_line_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(payload, CTX)
    assert (caught.value.channel, caught.value.reason) == ("dispenser", reason)
