"""Admission to the runners' queue: by depth, and by how long a new job would wait to start."""

from __future__ import annotations

from typing import Any, cast

import pytest

from gateway.errors import QueueFull
from gateway.executions.backlog import Backlog


def _backlog(*, capacity: int, max_wait: float | None, waiting: int, rate: float) -> Backlog:
    # The admission rule reads only the figures a refresh keeps: no JetStream call is made here.
    backlog = Backlog(cast(Any, None), capacity, max_wait)
    backlog.pending, backlog.rate, backlog.service_rate = waiting, rate, rate
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


def test_the_wait_is_estimated_from_busy_intervals_only() -> None:
    backlog = _backlog(capacity=200, max_wait=10, waiting=0, rate=0)
    # A busy minute: jobs always waiting, the runners finish 5 a second.
    backlog.pending = 20
    for second in range(60):
        backlog.observe(float(second), 5 * second)
    assert round(backlog.service_rate, 1) == 5.0
    # A quiet hour: nothing waits, nothing is finished; the demand rate falls, the capacity stays.
    backlog.pending = 0
    for second in range(60, 3660, 60):
        backlog.observe(float(second), 300)
    assert backlog.rate < 0.1 and round(backlog.service_rate, 1) == 5.0
    # The first burst after it: 40 jobs take 8 s at 5 a second, so they are admitted.
    backlog.pending = 40
    backlog.admit()
