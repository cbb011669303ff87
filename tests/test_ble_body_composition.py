"""Body Composition Measurement (0x2A9C): payloads constructed from the GATT XML.

No public test vector with bytes was found (eisaev/blevalueparser and RonanB96 test other
paths); every payload here is built field by field from body_composition_measurement.xml
(oesmith/gatt-xml@4fd2ede1) and the expected values worked out by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from adapters.ble_body_composition import decode
from adapters.errors import DecodeError
from adapters.model import DecodeContext, Event, Observation, Unit

CTX = DecodeContext(zone=ZoneInfo("Europe/Stockholm"))
FAT = ("41982-0", 188748)
WEIGHT = ("29463-7", 188736)
HEIGHT = ("8302-2", 188740)
MORNING = datetime(2024, 5, 6, 6, 30, tzinfo=UTC)  # 08:30 CEST on the wire

# flags 0x1ffe: every field, SI, multiple packet; body fat 25.3 %, 2024-05-06 08:30:00,
# user 1, basal metabolism 7000 kJ, muscle 40.2 %, muscle mass 30 kg, fat free mass 55.5 kg,
# soft lean mass 52 kg, body water mass 40 kg, impedance 520.5 Ohm, weight 74.3 kg,
# height 1.765 m.
FULL = bytes.fromhex("fe1ffd00e8070506081e0001581b920170175c2ba028401f55140c3ae506")


def obs(codes: tuple[str, int], value: str, unit: Unit, *, flags: tuple[str, ...] = (),
        at: datetime | None = None, user: int | None = None) -> Observation:
    """An expected observation."""
    return Observation(code=codes[0], mdc=codes[1], value=Decimal(value), unit=unit,
                       measured_at=at, flags=flags, device_user=user)


def part(value: str, unit: str) -> dict[str, Any]:
    """One component in the ``scale.body_composition`` event."""
    return {"value": Decimal(value), "unit": unit}


def test_body_composition_every_field() -> None:
    flags = ("multiple_packet",)
    expected: list[Observation | Event] = [
        obs(FAT, "25.3", Unit.PERCENT, flags=flags, at=MORNING, user=1),
        obs(WEIGHT, "74.300", Unit.KG, flags=flags, at=MORNING, user=1),
        obs(HEIGHT, "1.765", Unit.M, flags=flags, at=MORNING, user=1),
        Event(
            type="scale.body_composition",
            occurred_at=MORNING,
            data={
                "basal_metabolism": part("7000", "kJ"),
                "muscle_percentage": part("40.2", "%"),
                "muscle_mass": part("30.000", "kg"),
                "fat_free_mass": part("55.500", "kg"),
                "soft_lean_mass": part("52.000", "kg"),
                "body_water_mass": part("40.000", "kg"),
                "impedance": part("520.5", "Ohm"),
                "user": 1,
                "flags": ["multiple_packet"],
            },
        ),
    ]
    result = decode(FULL, CTX)
    assert result == expected
    # The digits of the 0.005 kg step survive: 74.300, not 74.3.
    assert [str(r.value) for r in result if isinstance(r, Observation)] == [
        "25.3", "74.300", "1.765"
    ]


def test_body_composition_minimal_is_body_fat_only() -> None:
    assert decode(bytes.fromhex("0000fd00"), CTX) == [obs(FAT, "25.3", Unit.PERCENT)]


def test_body_composition_imperial_uses_the_weight_scale_steps() -> None:
    # flags 0x0c21: imperial, muscle mass, weight, height; 18.0 %, 66.40 lb, 156.90 lb, 69.5 in.
    payload = bytes.fromhex("210cb400f0194a3db702")
    expected: list[Observation | Event] = [
        obs(FAT, "18.0", Unit.PERCENT),
        obs(WEIGHT, "156.90", Unit.LB),
        obs(HEIGHT, "69.5", Unit.IN),
        Event(type="scale.body_composition", occurred_at=None,
              data={"muscle_mass": part("66.40", "[lb_av]"), "user": None, "flags": []}),
    ]
    assert decode(payload, CTX) == expected


def test_body_composition_unsuccessful_body_fat_is_an_event() -> None:
    # flags 0x0406: time stamp, user 2, weight 70 kg; body fat 0xFFFF (eisaev/blevalueparser
    # isMeasurementUnsuccessful). The weight was still measured and is kept.
    payload = bytes.fromhex("0604ffffe8070506081e0002b036")
    expected: list[Observation | Event] = [
        Event(type="scale.measurement_unsuccessful", occurred_at=MORNING,
              data={"measurement": "body_fat_percentage", "user": 2, "flags": []}),
        obs(WEIGHT, "70.000", Unit.KG, at=MORNING, user=2),
    ]
    assert decode(payload, CTX) == expected


@pytest.mark.parametrize(
    ("hex_fat", "flags"),
    [("0a00", ()), ("0900", ("implausible",)), ("ee02", ()), ("ef02", ("implausible",))],
)
def test_body_composition_body_fat_bounds(hex_fat: str, flags: tuple[str, ...]) -> None:
    # 1.0 and 75.0 % plausible; 0.9 and 75.1 % not.
    result = decode(bytes.fromhex("0000" + hex_fat), CTX)
    assert [r.flags for r in result if isinstance(r, Observation)] == [flags]


def test_body_composition_trailing_bytes_are_flagged() -> None:
    result = decode(bytes.fromhex("0000fd0000"), CTX)
    assert result == [obs(FAT, "25.3", Unit.PERCENT, flags=("trailing_bytes",))]


@pytest.mark.parametrize(
    ("hex_payload", "reason"),
    [
        ("", "payload is 0 bytes; a measurement needs at least 4"),
        ("0000fd", "payload is 3 bytes; a measurement needs at least 4"),
        ("0600fd00", "payload is 4 bytes but flags 0x0006 (time stamp, user id, SI) need 12"),
        ("010cfd000000", "payload is 6 bytes but flags 0x0c01 (weight, height, imperial) need 8"),
    ],
)
def test_body_composition_rejects_with_one_line_reason(hex_payload: str, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(bytes.fromhex(hex_payload), CTX)
    assert (caught.value.channel, caught.value.reason) == ("ble/2a9c", reason)


def test_body_composition_every_prefix_is_rejected() -> None:
    for size in range(len(FULL)):
        with pytest.raises(DecodeError):
            decode(FULL[:size], CTX)
