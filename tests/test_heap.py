"""The collector's settings for long-running processes (gateway/heap.py)."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from gateway import heap


@pytest.fixture
def thresholds() -> Iterator[None]:
    """The collector's thresholds put back after the test."""
    kept = gc.get_threshold()
    yield
    gc.set_threshold(*kept)


def test_collections_come_less_often_with_the_oldest_generations_trigger_kept(
        thresholds: None) -> None:
    gc.set_threshold(700, 10, 7)
    heap.collect_less_often()
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, heap.MIDDLE_THRESHOLD, 7)


# In a process of its own: settling collects everything unreachable, and in the test process
# that would include what earlier tests left behind, and freeze the rest of the suite's heap.
_SETTLE = """
import gc, weakref
from gateway import heap

class Node:
    def __init__(self):
        self.me = self  # a cycle: only the collector frees it

gc.disable()
garbage = weakref.ref(Node())
kept = [Node() for _ in range(10)]
assert garbage() is not None
heap.settle()
print(garbage() is None, gc.get_freeze_count() > len(kept))
"""


def test_settling_collects_startups_garbage_then_freezes_what_is_left() -> None:
    done = subprocess.run([sys.executable, "-c", _SETTLE], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
