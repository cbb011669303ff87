"""PLX Spot-check (0x2A5E) and Continuous (0x2A5F): SpeziBluetooth PLXTests vectors and more."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from adapters.ble_plx import decode_continuous, decode_spot_check
from adapters.errors import DecodeError
from adapters.model import AbsentReason, DecodeContext, Event, Observation, Unit

CTX = DecodeContext(zone=ZoneInfo("Europe/Stockholm"))
Decoder = Callable[[bytes, DecodeContext], list[Observation | Event]]
SPO2 = ("2708-6", 150456)
PULSE = ("8867-4", 149530)

# StanfordSpezi/SpeziBluetooth Tests/SpeziBluetoothServicesTests/PLXTests.swift,
# testSpotCheckMeasurementCoding: flags 0x0f, SpO2 94.0, PR 147.0, 2024-11-29 23:08:57,
# status 0x4020 (ongoing, questionable), device status 0x000022 (equipment malfunction, low
# perfusion), PAI 8.70.
SPEZI_SPOT = bytes([15, 172, 243, 190, 245, 232, 7, 11, 29, 23, 8, 57, 32, 64, 34, 0, 0, 102,
                    227])
# testFullMeasurementCoding: flags 0x1f, Normal 99.0/97.0, Fast 97.0/137.0, Slow 98.0/69.0,
# status 0x0120 (ongoing, fully qualified), device status 0, PAI 8.90.
SPEZI_FULL = bytes([31, 222, 243, 202, 243, 202, 243, 90, 245, 212, 243, 178, 242, 32, 1, 0, 0,
                    0, 122, 227])


def obs(codes: tuple[str, int], value: str | None, *, flags: tuple[str, ...] = (),
        at: datetime | None = None, absent: AbsentReason | None = None) -> Observation:
    """An expected SpO2 or pulse-rate observation."""
    unit = Unit.PERCENT if codes == SPO2 else Unit.PER_MIN
    return Observation(code=codes[0], mdc=codes[1], value=None if value is None else Decimal(value),
                       unit=unit, measured_at=at, flags=flags, absent_reason=absent)


def pai(value: str | None, flags: list[str], *, at: datetime | None = None,
        absent: str | None = None) -> Event:
    """An expected pulse amplitude index event."""
    return Event(type="oximeter.pulse_amplitude_index", occurred_at=at,
                 data={"value": None if value is None else Decimal(value), "unit": "%",
                       "absent_reason": absent, "flags": flags})


def digits(records: list[Observation | Event]) -> list[str]:
    """The values as written, so 99.0 and 99 differ."""
    return [str(r.value) for r in records if isinstance(r, Observation)]


def test_plx_continuous_spezi_very_simple() -> None:
    # testVerySimpleMeasurementCoding: Spezi's encoder writes 100.0/90.0 (0xF3E8, 0xF384) and
    # its decoder reads 100/90 from exponent-0 words; both are the same measurement.
    assert decode_continuous(bytes([0, 232, 243, 132, 243]), CTX) == [
        obs(SPO2, "100.0"), obs(PULSE, "90.0")]
    result = decode_continuous(bytes([0, 100, 0, 90, 0]), CTX)
    assert result == [obs(SPO2, "100"), obs(PULSE, "90")]
    assert digits(result) == ["100", "90"]


def test_plx_continuous_spezi_simple_with_status_and_pai() -> None:
    # testSimpleMeasurementCoding: flags 0x1c, 95/90, measurement ongoing, PAI 8.7.
    payload = bytes([28, 95, 0, 90, 0, 32, 0, 0, 0, 0, 87, 240])
    flags = ("measurement_ongoing",)
    assert decode_continuous(payload, CTX) == [
        obs(SPO2, "95", flags=flags), obs(PULSE, "90", flags=flags), pai("8.7", list(flags))]


def test_plx_continuous_spezi_full_normal_first_then_fast_and_slow() -> None:
    # Normal is the clinical pair; Fast and Slow averages go in one event beside it.
    status = ("measurement_ongoing", "fully_qualified_data")
    result = decode_continuous(SPEZI_FULL, CTX)

    def reading(value: str) -> dict[str, object]:
        return {"value": Decimal(value), "absent_reason": None}

    assert result == [
        obs(SPO2, "99.0", flags=status),
        obs(PULSE, "97.0", flags=status),
        Event(type="oximeter.spo2pr_averages", occurred_at=None, data={
            "flags": list(status),
            "fast": {"spo2": reading("97.0"), "pulse_rate": reading("137.0")},
            "slow": {"spo2": reading("98.0"), "pulse_rate": reading("69.0")},
        }),
        pai("8.90", list(status)),
    ]
    assert digits(result) == ["99.0", "97.0"]
    averages = result[2]
    assert isinstance(averages, Event)
    assert str(averages.data["fast"]["pulse_rate"]["value"]) == "137.0"


def test_plx_spot_check_spezi_questionable_measurement_has_no_number() -> None:
    # Gateway rule: status b14 (questionable) set, so SpO2, PR and PAI carry no value.
    at = datetime(2024, 11, 29, 22, 8, 57, tzinfo=UTC)
    flags = ("measurement_ongoing", "questionable_measurement", "equipment_malfunction",
             "low_perfusion")
    error = AbsentReason.ERROR
    assert decode_spot_check(SPEZI_SPOT, CTX) == [
        obs(SPO2, None, flags=flags, at=at, absent=error),
        obs(PULSE, None, flags=flags, at=at, absent=error),
        pai(None, list(flags), at=at, absent="error"),
    ]


@pytest.mark.parametrize(
    ("status_hex", "flag"),
    [("0020", "measurement_unavailable"), ("0040", "questionable_measurement"),
     ("0080", "invalid_measurement")],
)
def test_plx_spot_check_no_value_statuses(status_hex: str, flag: str) -> None:
    # Constructed: flags 0x02, SpO2 97, PR 72, status with b13/b14/b15.
    payload = bytes.fromhex("0261004800" + status_hex)
    error = AbsentReason.ERROR
    assert decode_spot_check(payload, CTX) == [
        obs(SPO2, None, flags=(flag,), absent=error), obs(PULSE, None, flags=(flag,), absent=error)]


def test_plx_spot_check_clock_not_set_drops_the_time_stamp_trap_7() -> None:
    # Constructed: flags 0x11 (time stamp, clock not set), 97 %, 72 /min, a stamp in 2000.
    payload = bytes.fromhex("1161004800d0070101000000")
    flags = ("clock_not_set",)
    assert decode_spot_check(payload, CTX) == [obs(SPO2, "97", flags=flags),
                                               obs(PULSE, "72", flags=flags)]


def test_plx_spot_check_time_stamp_in_the_hub_zone() -> None:
    payload = bytes.fromhex("0161004800e20704110f3300")
    at = datetime(2018, 4, 17, 13, 51, tzinfo=UTC)
    assert decode_spot_check(payload, CTX) == [obs(SPO2, "97", at=at), obs(PULSE, "72", at=at)]


def test_plx_special_values_become_absent_reasons() -> None:
    # Constructed: SpO2 NaN (0x07FF), PR NRes (0x0800); PAI +INF (0x07FE).
    payload = bytes.fromhex("08ff070008fe07")
    assert decode_spot_check(payload, CTX) == [
        obs(SPO2, None, absent=AbsentReason.NOT_A_NUMBER),
        obs(PULSE, None, absent=AbsentReason.ERROR),
        pai(None, [], absent="positive-infinity"),
    ]


@pytest.mark.parametrize(
    ("hex_payload", "flags"),
    [
        ("0032001400", [(), ()]),  # 50 %, 20 /min: lower bounds
        ("0064002c01", [(), ()]),  # 100 %, 300 /min: upper bounds
        ("0031001300", [("implausible",), ("implausible",)]),  # 49 %, 19 /min
        ("0065002d01", [("implausible",), ("implausible",)]),  # 101 %, 301 /min
    ],
)
def test_plx_plausibility_bounds(hex_payload: str, flags: list[tuple[str, ...]]) -> None:
    for decoder in (decode_spot_check, decode_continuous):
        records = decoder(bytes.fromhex(hex_payload), CTX)
        assert [r.flags for r in records if isinstance(r, Observation)] == flags


def test_plx_device_status_rfu_bits_are_ignored_and_trailing_bytes_flagged() -> None:
    # Constructed: flags 0x04, device status 0xff8000 (b15 sensor disconnected + RFU b16-23).
    payload = bytes.fromhex("04 6100 4800 0080ff ee")
    flags = ("sensor_disconnected", "trailing_bytes")
    assert decode_spot_check(payload, CTX) == [obs(SPO2, "97", flags=flags),
                                               obs(PULSE, "72", flags=flags)]


@pytest.mark.parametrize(
    ("decoder", "channel", "hex_payload", "reason"),
    [
        (decode_spot_check, "ble/2a5e", "",
         "payload is 0 bytes; a measurement needs at least 5"),
        (decode_spot_check, "ble/2a5e", "0f61004800",
         "payload is 5 bytes but flags 0x0f (time stamp, measurement status, device and sensor "
         "status, pulse amplitude index) need 19"),
        (decode_continuous, "ble/2a5f", "6100480000",
         "payload is 5 bytes but flags 0x61 (SpO2PR-Fast) need 9"),
        (decode_continuous, "ble/2a5f", "03610048",
         "payload is 4 bytes; a measurement needs at least 5"),
    ],
)
def test_plx_rejects_with_one_line_reason(decoder: Decoder, channel: str, hex_payload: str,
                                          reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decoder(bytes.fromhex(hex_payload), CTX)
    assert (caught.value.channel, caught.value.reason) == (channel, reason)


def test_plx_every_prefix_of_the_spezi_vectors_is_rejected() -> None:
    for payload, decoder in ((SPEZI_SPOT, decode_spot_check), (SPEZI_FULL, decode_continuous)):
        for size in range(len(payload)):
            with pytest.raises(DecodeError):
                decoder(payload[:size], CTX)
