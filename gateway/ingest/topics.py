"""The MQTT topic contract (DESIGN.md): aidlink/v1/{client_id}/{device_id}/{channel}."""

from __future__ import annotations

import functools
from dataclasses import dataclass

PREFIX = "aidlink/v1"
# Everything a device may publish: two levels of identity, then a channel of one or more levels.
SUBSCRIPTION = f"{PREFIX}/+/+/#"


class TopicError(ValueError):
    """A topic does not follow the contract; the message says how."""


# Frozen: parse_up hands the same one to every message on its topic.
@dataclass(frozen=True, slots=True)
class UpTopic:
    """A parsed up topic."""

    client_id: str
    device_id: str
    channel: str


# A fleet publishes on a few topics per device, again and again: each is parsed once (a bad
# one raises each time; exceptions are not kept).
@functools.lru_cache(maxsize=65536)
def parse_up(topic: str) -> UpTopic | None:
    """Parse an up topic; None for a down topic (the gateway's own commands); raise if bad."""
    parts = topic.split("/")
    if len(parts) < 5 or "/".join(parts[:2]) != PREFIX:
        raise TopicError(f"topic {topic!r} is not aidlink/v1/{{client}}/{{device}}/{{channel}}")
    client_id, device_id = parts[2], parts[3]
    if device_id == "down":
        return None
    if not client_id or not device_id or any(not p for p in parts[4:]):
        raise TopicError(f"topic {topic!r} has an empty level")
    return UpTopic(client_id=client_id, device_id=device_id, channel="/".join(parts[4:]))


def down_topic(client_id: str, command: str) -> str:
    """The topic on which a client receives a command."""
    return f"{PREFIX}/{client_id}/down/{command}"
