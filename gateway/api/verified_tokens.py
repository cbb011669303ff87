"""Bearer tokens the API has already verified, so that a client's every request does not
check the same ES256 signature again (a fifth of a millisecond each).

An entry holds while its token is unexpired, for at most a minute (as long as the key ring
trusts its cache of keys), and only while the key ring has not read its keys again since the
check: a reload may have dropped the key that signed it. A retired key stays trusted longer
than any token it signed can live, so no entry accepts what checking again would refuse.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from gateway.auth import LEEWAY_SECONDS, Caller

DEFAULT_SIZE = 4096
MAX_AGE_SECONDS = 60.0


class VerifiedTokens:
    """A bounded map of verified tokens to their callers; thread-safe. When full, the entry
    checked longest ago makes room."""

    def __init__(self, size: int = DEFAULT_SIZE, *, max_age: float = MAX_AGE_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        """Keep up to ``size`` tokens, each for at most ``max_age`` seconds of ``clock``
        (the wall clock, as tokens' expiry times are)."""
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size}")
        self._size = size
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        # token -> (caller, accepted until, key-ring generation it was checked under)
        self._entries: dict[str, tuple[Caller, float, int]] = {}

    def get(self, token: str, generation: int) -> Caller | None:
        """The caller of a token checked under key-ring ``generation`` and still valid."""
        with self._lock:
            entry = self._entries.get(token)
        if entry is None:
            return None
        caller, until, checked_under = entry
        if checked_under != generation or self._clock() >= until:
            return None
        return caller

    def put(self, token: str, caller: Caller, expires: int, generation: int) -> None:
        """Remember a token verified under ``generation`` that expires at ``expires``."""
        # The token verifies until its expiry plus the clock leeway (as PyJWT checks it).
        until = min(expires + LEEWAY_SECONDS, self._clock() + self._max_age)
        with self._lock:
            self._entries.pop(token, None)
            if len(self._entries) >= self._size:
                # Dicts keep insertion order: the first entry was checked longest ago.
                del self._entries[next(iter(self._entries))]
            self._entries[token] = (caller, until, generation)

    def __len__(self) -> int:
        """How many tokens are kept (some may no longer be valid)."""
        with self._lock:
            return len(self._entries)
