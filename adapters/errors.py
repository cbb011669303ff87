"""The exception tree of the adapters: the only exceptions a decoder may raise."""


class AdapterError(Exception):
    """Base of every adapter error."""


class DecodeError(AdapterError):
    """A payload was rejected; ``reason`` is one line naming what was wrong."""

    def __init__(self, channel: str, reason: str) -> None:
        super().__init__(f"{channel}: {reason}")
        self.channel = channel
        self.reason = reason


class UnknownChannelError(AdapterError):
    """No adapter is registered for a channel."""

    def __init__(self, channel: str) -> None:
        super().__init__(f"no adapter for channel {channel!r}")
        self.channel = channel
