"""Channel name -> decoder: the one table the ingest loop consults for every payload."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from adapters import ble_bpm
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
