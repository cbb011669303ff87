"""Answers the gateway sends a device after its message is committed (down topics)."""

from __future__ import annotations

from collections.abc import Callable

from adapters import scaip
from adapters.errors import DecodeError

# An answer to a request: from the request's bytes and, when it was set aside, the reason
# (a dead-letter label); None when no answer can be built.
Answer = Callable[[bytes, str | None], bytes | None]


def _scaip(payload: bytes, rejected: str | None) -> bytes | None:
    # snu 0 OK for a stored alarm; 2 invalid format for one we could not decode (the unit
    # then knows to fall back, e.g. to a voice call); 5 not treated for one the registry
    # refused (unknown or unpaired unit). A request without a readable <ref> cannot be answered.
    if rejected is None:
        snu = scaip.StatusNumber.OK
    elif rejected == "decode_error":
        snu = scaip.StatusNumber.INVALID_FORMAT
    else:
        snu = scaip.StatusNumber.NOT_TREATED
    try:
        return scaip.reply(payload, snu)
    except DecodeError:
        return None


# channel -> (down command, answer)
REPLIES: dict[str, tuple[str, Answer]] = {scaip.CHANNEL: ("scaip", _scaip)}

# Channels whose messages are alarms: their batch is flushed at once, without the batch delay,
# so an alarm is stored and answered well inside 100 ms.
PRIORITY_CHANNELS = frozenset({"scaip", "dc09"})
