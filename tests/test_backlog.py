"""Admission to the runners' queue: by depth, and by how long a new job would wait to start."""

from __future__ import annotations

from typing import Any, cast

import pytest

from gateway.errors import QueueFull
from gateway.executions.backlog import Backlog


def _backlog(*, capacity: int, max_wait: float | None, waiting: int, rate: float) -> Backlog:
    # The admission rule reads only the figures a refresh keeps: no JetStream call is made here.
    backlog = Backlog(cast(Any, None), capacity, max_wait)
    backlog.pending, backlog.rate = waiting, rate
    return backlog


def test_a_queue_that_would_wait_too_long_refuses_with_retry_after() -> None:
    # 60 jobs at 4 jobs/s: a new one would start in 15 s, over the 10 s allowed, far below the depth cap.
    backlog = _backlog(capacity=200, max_wait=10, waiting=60, rate=4)
    with pytest.raises(QueueFull) as refused:
        backlog.admit()
    assert refused.value.headers == {"Retry-After": "15"}
    # The same queue without the wait rule (the protection off) admits it.
    _backlog(capacity=200, max_wait=None, waiting=60, rate=4).admit()


def test_a_short_wait_and_an_unknown_rate_are_admitted() -> None:
    _backlog(capacity=200, max_wait=10, waiting=30, rate=4).admit()  # 7.5 s
    # Before the runners have finished anything the rate is unknown: only the depth cap applies.
    _backlog(capacity=200, max_wait=10, waiting=150, rate=0).admit()
    with pytest.raises(QueueFull):
        _backlog(capacity=200, max_wait=10, waiting=200, rate=0).admit()
