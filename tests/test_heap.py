"""The collector's settings for long-running processes (gateway/heap.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway import heap


@pytest.fixture
def collector() -> Iterator[None]:
    """The collector's thresholds and frozen objects put back after the test."""
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_collections_come_less_often_with_the_oldest_generations_trigger_kept(
        collector: None) -> None:
    gc.set_threshold(700, 10, 7)
    heap.collect_less_often()
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, heap.MIDDLE_THRESHOLD, 7)


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_settling_collects_startups_garbage_then_freezes_what_is_left(collector: None) -> None:
    gc.unfreeze()
    gc.disable()
    try:
        garbage = weakref.ref(_Node())
        kept = [_Node() for _ in range(10)]
        assert garbage() is not None
        heap.settle()
    finally:
        gc.enable()
    assert garbage() is None
    assert gc.get_freeze_count() > len(kept)
