"""PLX Spot-check (GATT 0x2A5E) and PLX Continuous (0x2A5F) measurements -> SpO2 and pulse rate.

Wire layouts (PROTOCOLS.md §2.3, plx_spot_check_measurement.xml, plx_continuous_measurement.xml),
little-endian, walked with a running offset:

    Spot-check 0x2A5E                         Continuous 0x2A5F
    [0] flags u8: b0 time stamp,              [0] flags u8: b0 SpO2PR-Fast, b1 SpO2PR-Slow,
        b1 measurement status, b2 device          b2 measurement status, b3 device and
        and sensor status, b3 PAI, b4 device      sensor status, b4 PAI, b5-7 RFU
        clock not set, b5-7 RFU
    [1..4] SpO2 SFLOAT %, PR SFLOAT /min      [1..4] SpO2PR-Normal: SpO2, PR SFLOAT
    +7 time stamp                  if b0      +4 SpO2PR-Fast: SpO2, PR          if b0
    +2 measurement status u16      if b1      +4 SpO2PR-Slow: SpO2, PR          if b1
    +3 device and sensor status u24 if b2     +2 measurement status u16         if b2
    +2 PAI SFLOAT %                if b3      +3 device and sensor status u24   if b3
                                              +2 PAI SFLOAT %                   if b4

Output: SpO2 (LOINC 2708-6, MDC 150456) and pulse rate (8867-4, MDC 149530) per SpO2/PR pair.
Continuous: the Normal pair is the clinical value. Fast and Slow are the same quantities
averaged over other windows at the same moment, so they are not stored as observations (they
would share code and time with the Normal pair); they travel in one ``oximeter.spo2pr_averages``
event with ``fast`` and ``slow`` objects. The pulse amplitude index has no verified LOINC code,
so it travels as the event ``oximeter.pulse_amplitude_index`` (``value``, ``unit`` "%",
``absent_reason``, ``flags``); MDC_PULS_OXIM_PERF_REL (19376, i.e. 150448) is the likely MDC
term but was only seen in unofficial listings.

Deliberate choices:

* Gateway rule (PROTOCOLS.md §2.3): with measurement status b13 (unavailable), b14
  (questionable) or b15 (invalid) set, no number is emitted: value None, absent reason
  ``error``, and the status bit as a flag.
* Spot-check flag b4 (device clock not set, trap 7): measured_at is None and the flag
  ``clock_not_set`` is added, even when a time stamp is present.
* Status bits become flags (below); RFU bits are ignored; trailing bytes are tolerated and
  flagged ``trailing_bytes``.
* Plausible ranges (flag ``implausible`` outside): SpO2 50-100 %, pulse rate 20-300 /min.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from adapters.catalogue import METRICS
from adapters.errors import DecodeError
from adapters.gatt_flags import check_length
from adapters.gatt_time import DATE_TIME_LENGTH, read_date_time
from adapters.ieee11073 import MedFloat, read_sfloat
from adapters.model import AbsentReason, DecodeContext, Event, Observation, Unit

CHANNEL_SPOT_CHECK = "ble/2a5e"
CHANNEL_CONTINUOUS = "ble/2a5f"
PAI_EVENT = "oximeter.pulse_amplitude_index"
AVERAGES_EVENT = "oximeter.spo2pr_averages"

_MANDATORY_LENGTH = 5  # flags + SpO2 + PR

# Measurement Status u16, b5-b15 (b0-4 RFU).
_MEASUREMENT_STATUS = (
    (1 << 5, "measurement_ongoing"),
    (1 << 6, "early_estimated_data"),
    (1 << 7, "validated_data"),
    (1 << 8, "fully_qualified_data"),
    (1 << 9, "data_from_storage"),
    (1 << 10, "demonstration_data"),
    (1 << 11, "testing_data"),
    (1 << 12, "calibration_ongoing"),
    (1 << 13, "measurement_unavailable"),
    (1 << 14, "questionable_measurement"),
    (1 << 15, "invalid_measurement"),
)
_NO_VALUE_STATUS = (1 << 13) | (1 << 14) | (1 << 15)
# Device and Sensor Status u24, b0-b15 (b16-23 RFU).
_DEVICE_STATUS = (
    (1 << 0, "extended_display_update_ongoing"),
    (1 << 1, "equipment_malfunction"),
    (1 << 2, "signal_processing_irregularity"),
    (1 << 3, "inadequate_signal"),
    (1 << 4, "poor_signal"),
    (1 << 5, "low_perfusion"),
    (1 << 6, "erratic_signal"),
    (1 << 7, "non_pulsatile_signal"),
    (1 << 8, "questionable_pulse"),
    (1 << 9, "signal_analysis_ongoing"),
    (1 << 10, "sensor_interference"),
    (1 << 11, "sensor_unconnected_to_user"),
    (1 << 12, "unknown_sensor_connected"),
    (1 << 13, "sensor_displaced"),
    (1 << 14, "sensor_malfunctioning"),
    (1 << 15, "sensor_disconnected"),
)

_SPO2 = (Decimal(50), Decimal(100))
_PULSE = (Decimal(20), Decimal(300))

# Optional fields in wire order per characteristic: flag bit, size, name for reject reasons.
_SPOT_FIELDS = (
    (0x01, DATE_TIME_LENGTH, "time stamp"),
    (0x02, 2, "measurement status"),
    (0x04, 3, "device and sensor status"),
    (0x08, 2, "pulse amplitude index"),
)
_CLOCK_NOT_SET = 0x10
_CONTINUOUS_FIELDS = (
    (0x01, 4, "SpO2PR-Fast"),
    (0x02, 4, "SpO2PR-Slow"),
    (0x04, 2, "measurement status"),
    (0x08, 3, "device and sensor status"),
    (0x10, 2, "pulse amplitude index"),
)
_Fields = tuple[tuple[int, int, str], ...]


def _check_length(payload: bytes, channel: str, fields: _Fields) -> int:
    """Reject a payload shorter than its flags announce; return the flags."""
    if len(payload) < _MANDATORY_LENGTH:
        raise DecodeError(
            channel, f"payload is {len(payload)} bytes; a measurement needs at least 5"
        )
    flags = payload[0]
    check_length(payload, channel, flags=flags, flag_bytes=1, mandatory=_MANDATORY_LENGTH,
                 fields=fields)
    return flags


def _bits(value: int, table: tuple[tuple[int, str], ...]) -> tuple[str, ...]:
    return tuple(name for bit, name in table if value & bit)


def _number(
    key: str,
    reading: MedFloat,
    unit: Unit,
    bounds: tuple[Decimal, Decimal],
    *,
    measured_at: datetime | None,
    flags: tuple[str, ...],
    suppressed: bool,
) -> Observation:
    metric = METRICS[key]
    value, absent = reading.value, reading.absent
    if suppressed:
        value, absent = None, AbsentReason.ERROR
    elif value is not None and not bounds[0] <= value <= bounds[1]:
        flags = (*flags, "implausible")
    return Observation(code=metric.loinc, mdc=metric.mdc, value=value, unit=unit,
                       measured_at=measured_at, flags=flags, absent_reason=absent)


def _pair(payload: bytes, offset: int, channel: str, *, measured_at: datetime | None,
          flags: tuple[str, ...], suppressed: bool) -> list[Observation | Event]:
    spo2 = read_sfloat(payload, offset, channel)
    pulse = read_sfloat(payload, offset + 2, channel)
    return [
        _number("spo2", spo2, Unit.PERCENT, _SPO2, measured_at=measured_at, flags=flags,
                suppressed=suppressed),
        _number("pulse_rate_oximeter", pulse, Unit.PER_MIN, _PULSE, measured_at=measured_at,
                flags=flags, suppressed=suppressed),
    ]


def _statuses(payload: bytes, offset: int, flags: int, status_bit: int,
              device_bit: int) -> tuple[tuple[str, ...], bool, int]:
    """Read the status fields present; return their flags, whether values are withheld, offset."""
    names: tuple[str, ...] = ()
    suppressed = False
    if flags & status_bit:
        status = int.from_bytes(payload[offset : offset + 2], "little")
        names = _bits(status, _MEASUREMENT_STATUS)
        suppressed = bool(status & _NO_VALUE_STATUS)
        offset += 2
    if flags & device_bit:
        names = (*names, *_bits(int.from_bytes(payload[offset : offset + 3], "little"),
                                _DEVICE_STATUS))
        offset += 3
    return names, suppressed, offset


def _plain(reading: MedFloat, suppressed: bool) -> dict[str, Any]:
    """A reading as event data: its value, or why there is none."""
    if suppressed:
        return {"value": None, "absent_reason": str(AbsentReason.ERROR)}
    absent = None if reading.absent is None else str(reading.absent)
    return {"value": reading.value, "absent_reason": absent}


def _pai_event(reading: MedFloat, *, measured_at: datetime | None, flags: tuple[str, ...],
               suppressed: bool) -> Event:
    value, absent = reading.value, reading.absent
    if suppressed:
        value, absent = None, AbsentReason.ERROR
    data = {"value": value, "unit": str(Unit.PERCENT),
            "absent_reason": None if absent is None else str(absent), "flags": list(flags)}
    return Event(type=PAI_EVENT, occurred_at=measured_at, data=data)


def decode_spot_check(payload: bytes, ctx: DecodeContext) -> list[Observation | Event]:
    """Decode one 0x2A5E indication into SpO2 and pulse rate (and a PAI event if sent)."""
    flags = _check_length(payload, CHANNEL_SPOT_CHECK, _SPOT_FIELDS)
    offset = _MANDATORY_LENGTH
    measured_at = None
    if flags & 0x01:
        measured_at = read_date_time(payload, offset, ctx.zone, CHANNEL_SPOT_CHECK)
        offset += DATE_TIME_LENGTH
    names, suppressed, offset = _statuses(payload, offset, flags, 0x02, 0x04)
    pai = None
    if flags & 0x08:
        pai = read_sfloat(payload, offset, CHANNEL_SPOT_CHECK)
        offset += 2
    if flags & _CLOCK_NOT_SET:
        measured_at, names = None, (*names, "clock_not_set")
    if len(payload) > offset:
        names = (*names, "trailing_bytes")
    records = _pair(payload, 1, CHANNEL_SPOT_CHECK, measured_at=measured_at, flags=names,
                    suppressed=suppressed)
    if pai is not None:
        records.append(_pai_event(pai, measured_at=measured_at, flags=names,
                                  suppressed=suppressed))
    return records


def decode_continuous(payload: bytes, ctx: DecodeContext) -> list[Observation | Event]:
    """Decode one 0x2A5F notification: the Normal pair, then Fast and Slow if sent (no time)."""
    flags = _check_length(payload, CHANNEL_CONTINUOUS, _CONTINUOUS_FIELDS)
    offset = _MANDATORY_LENGTH
    extra_pairs: list[tuple[int, str]] = []
    for bit, name in ((0x01, "spo2pr_fast"), (0x02, "spo2pr_slow")):
        if flags & bit:
            extra_pairs.append((offset, name))
            offset += 4
    names, suppressed, offset = _statuses(payload, offset, flags, 0x04, 0x08)
    pai = None
    if flags & 0x10:
        pai = read_sfloat(payload, offset, CHANNEL_CONTINUOUS)
        offset += 2
    if len(payload) > offset:
        names = (*names, "trailing_bytes")
    records = _pair(payload, 1, CHANNEL_CONTINUOUS, measured_at=None, flags=names,
                    suppressed=suppressed)
    if extra_pairs:
        averages: dict[str, Any] = {"flags": list(names)}
        for pair_offset, name in extra_pairs:
            averages[name.removeprefix("spo2pr_")] = {
                "spo2": _plain(read_sfloat(payload, pair_offset, CHANNEL_CONTINUOUS), suppressed),
                "pulse_rate": _plain(read_sfloat(payload, pair_offset + 2, CHANNEL_CONTINUOUS),
                                     suppressed),
            }
        records.append(Event(type=AVERAGES_EVENT, occurred_at=None, data=averages))
    if pai is not None:
        records.append(_pai_event(pai, measured_at=None, flags=names, suppressed=suppressed))
    return records
