"""The body budget alone: what it lets in, what it refuses, and when it hands freed memory back."""

from __future__ import annotations

import asyncio

import pytest

from service import limits
from service.errors import Overloaded

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


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
    await asyncio.sleep(0.05)
    assert calls == []  # a body is still in flight
    budget.release(20 * MiB)
    for _ in range(100):
        if calls:
            break
        await asyncio.sleep(0.01)
    assert calls == [0]
    budget.reserve({}, 1 * MiB)
    budget.release(1 * MiB)
    await asyncio.sleep(0.05)
    assert calls == [0]  # too little released since the last trim
