"""Channel name -> decoder: the one table the ingest loop consults for every payload."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from adapters import (
    ble_battery,
    ble_body_composition,
    ble_bpm,
    ble_date_time,
    ble_glucose,
    ble_glucose_context,
    ble_icp,
    ble_plx,
    ble_temperature,
    ble_weight,
    calprotectin,
    dc09,
    dispenser,
    ecg,
    lock,
    night_supervision,
    scaip,
    spirometer,
    status,
    tonometer,
    urinalysis,
    wipe,
)
from adapters.errors import UnknownChannelError
from adapters.model import DecodeContext, Record

# A pure decoder: raw payload and context in, records out; raises only DecodeError.
Adapter = Callable[[bytes, DecodeContext], list[Record]]


def _as_adapter(decoder: Callable[[bytes, DecodeContext], Sequence[Record]]) -> Adapter:
    """Widen a decoder's result to ``list[Record]`` (``list`` is invariant, so mypy needs it)."""

    def adapter(payload: bytes, ctx: DecodeContext) -> list[Record]:
        return list(decoder(payload, ctx))

    adapter.__doc__ = decoder.__doc__
    return adapter


ADAPTERS: dict[str, Adapter] = {
    ble_bpm.CHANNEL: _as_adapter(ble_bpm.decode),
    ble_icp.CHANNEL: _as_adapter(ble_icp.decode),
    ble_weight.CHANNEL: _as_adapter(ble_weight.decode),
    ble_body_composition.CHANNEL: _as_adapter(ble_body_composition.decode),
    ble_plx.CHANNEL_SPOT_CHECK: _as_adapter(ble_plx.decode_spot_check),
    ble_plx.CHANNEL_CONTINUOUS: _as_adapter(ble_plx.decode_continuous),
    ble_glucose.CHANNEL: _as_adapter(ble_glucose.decode),
    ble_glucose_context.CHANNEL: _as_adapter(ble_glucose_context.decode),
    ble_temperature.CHANNEL: _as_adapter(ble_temperature.decode),
    ble_battery.CHANNEL: _as_adapter(ble_battery.decode),
    ble_date_time.CHANNEL: _as_adapter(ble_date_time.decode),
    spirometer.CHANNEL: _as_adapter(spirometer.decode),
    dispenser.CHANNEL: _as_adapter(dispenser.decode),
    lock.CHANNEL: _as_adapter(lock.decode),
    status.CHANNEL: _as_adapter(status.decode),
    scaip.CHANNEL: _as_adapter(scaip.decode),
    dc09.CHANNEL: _as_adapter(dc09.decode),
    wipe.CHANNEL: _as_adapter(wipe.decode),
    # Issue 8, next device classes: our JSON documents (docs/DEVICE_DOCUMENTS.md §8-).
    calprotectin.CHANNEL: _as_adapter(calprotectin.decode),
    tonometer.CHANNEL: _as_adapter(tonometer.decode),
    urinalysis.CHANNEL: _as_adapter(urinalysis.decode),
    night_supervision.CHANNEL: _as_adapter(night_supervision.decode),
    ecg.CHANNEL: _as_adapter(ecg.decode),
}


def decode(channel: str, payload: bytes, ctx: DecodeContext | None = None) -> list[Record]:
    """Decode ``payload`` with the adapter registered for ``channel``.

    Raises UnknownChannelError for an unregistered channel and DecodeError for a rejected
    payload; nothing else escapes a decoder.
    """
    try:
        adapter = ADAPTERS[channel]
    except KeyError:
        raise UnknownChannelError(channel) from None
    return adapter(payload, ctx if ctx is not None else DecodeContext())
