"""The API's memory of verified bearer tokens (gateway/api/verified_tokens.py)."""

from __future__ import annotations

import pytest

from gateway.api.verified_tokens import VerifiedTokens
from gateway.auth import LEEWAY_SECONDS, Caller, Role


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


ANNA = Caller("20", Role.CLINICIAN, "ehr-1")
BERG = Caller("2080", Role.ADMIN, "ehr-2")


def test_a_token_holds_until_its_expiry_plus_the_leeway() -> None:
    clock = Clock()
    tokens = VerifiedTokens(max_age=3600, clock=clock)
    tokens.put("t1", ANNA, expires=int(clock.now) + 30, generation=1)
    assert tokens.get("t1", 1) is ANNA
    clock.now += 30 + LEEWAY_SECONDS - 0.5
    assert tokens.get("t1", 1) is ANNA
    clock.now += 0.5
    assert tokens.get("t1", 1) is None
    assert tokens.get("never-seen", 1) is None


def test_a_token_is_checked_again_after_a_key_ring_reload_or_its_maximum_age() -> None:
    clock = Clock()
    tokens = VerifiedTokens(max_age=60, clock=clock)
    tokens.put("t1", ANNA, expires=int(clock.now) + 600, generation=4)
    assert tokens.get("t1", 5) is None
    assert tokens.get("t1", 4) is ANNA
    clock.now += 60
    assert tokens.get("t1", 4) is None


def test_when_full_the_token_checked_longest_ago_makes_room() -> None:
    clock = Clock()
    tokens = VerifiedTokens(size=2, clock=clock)
    far = int(clock.now) + 600
    tokens.put("t1", ANNA, far, 1)
    tokens.put("t2", BERG, far, 1)
    tokens.put("t1", ANNA, far, 1)  # checked again: now the newest
    tokens.put("t3", BERG, far, 1)
    assert len(tokens) == 2
    assert tokens.get("t2", 1) is None
    assert tokens.get("t1", 1) is ANNA and tokens.get("t3", 1) is BERG
    with pytest.raises(ValueError, match="size must be at least 1"):
        VerifiedTokens(size=0)
