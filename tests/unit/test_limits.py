"""The body budget alone: what it lets in, what it refuses, and when it hands freed memory back."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from service import limits
from service.errors import Overloaded
from tests.helpers import until

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


async def _executor_drained() -> None:
    """Returns once every job handed to the default executor before the call has run: a trim submitted earlier has
    run by then (one job per worker thread, each waiting at a barrier until all have started)."""
    loop = asyncio.get_running_loop()
    workers = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default max_workers
    barrier = threading.Barrier(workers)
    await asyncio.gather(*(loop.run_in_executor(None, barrier.wait, 10) for _ in range(workers)))


async def test_budget_refuses_the_excess_but_always_lets_one_body_in():
    refused = []
    budget = limits.BodyBudget(10 * MiB, refused.append)
    first, second, third = {}, {}, {}
    budget.reserve(first, 40 * MiB)  # larger than the budget, but alone
    with pytest.raises(Overloaded) as excess:
        budget.reserve(second, 1)
    assert excess.value.status == 503 and excess.value.headers["Retry-After"] == "1"
    assert refused == ["body_budget"] and "latentserve.body_bytes" not in second
    budget.release(first["latentserve.body_bytes"])
    budget.reserve(third, 10 * MiB)
    assert budget.in_flight == 10 * MiB


async def test_memory_is_trimmed_once_the_last_large_body_is_released(monkeypatch):
    calls = []
    monkeypatch.setattr(limits, "_malloc_trim", lambda pad: calls.append(pad) or 1)
    budget = limits.BodyBudget(256 * MiB)
    scopes = [{}, {}]
    for scope in scopes:
        budget.reserve(scope, 20 * MiB)
    budget.release(20 * MiB)
    await _executor_drained()
    assert calls == []  # a body is still in flight
    budget.release(20 * MiB)
    await until(lambda: calls)
    assert calls == [0]
    budget.reserve({}, 1 * MiB)
    budget.release(1 * MiB)
    await _executor_drained()
    assert calls == [0]  # too little released since the last trim
