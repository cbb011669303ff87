"""Answers the gateway sends a device after its message is committed (down topics)."""

from __future__ import annotations

from collections.abc import Callable

# channel -> (down command, builder of the reply payload from the request payload)
REPLIES: dict[str, tuple[str, Callable[[bytes], bytes]]] = {}

# Channels whose messages are alarms: their batch is flushed at once, without the batch delay,
# so an alarm is stored and answered well inside 100 ms.
PRIORITY_CHANNELS = frozenset({"scaip", "dc09"})
