"""The batcher with a fake batch function: merging, splitting, order, timeouts, the queue bound, failure isolation,
cancelled requests and the low-load rule (no waiting for company that is not coming). Events, not sleeps."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from service.batcher import BatchConfig, Batcher
from service.compute import Activity, ComputeThread
from service.errors import Internal, Overloaded, Timeout
from tests.helpers import until

pytestmark = pytest.mark.anyio

FOREVER = 3600.0


class FakeModel:
    """Doubles its rows; records each batch's row count; can be held at a gate; fails on rows holding -1."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.inputs: list[np.ndarray] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, parts):
        x = np.concatenate(parts)
        self.batches.append(len(x))
        self.inputs.append(x)
        self.entered.set()
        self.gate.wait(10)
        if (x == -1).any():
            raise RuntimeError("poisoned batch")
        return x * 2, x.sum(axis=1, keepdims=True)


@pytest.fixture
async def make():
    created = []

    def build(**config) -> tuple[Batcher, FakeModel, Activity]:
        activity = Activity()
        compute = ComputeThread(activity)
        fake = FakeModel()
        defaults = {"max_batch_size": 8, "max_delay_s": FOREVER, "max_queue_items": 64, "timeout_s": FOREVER,
                    "max_pass_s": 0.0}
        batcher = Batcher(fake, compute, activity, BatchConfig(**{**defaults, **config}))
        batcher.start()
        created.append((batcher, compute, fake))
        return batcher, fake, activity

    yield build
    for batcher, compute, fake in created:
        fake.gate.set()
        await batcher.close()
        compute.shutdown()


def rows(n: int, start: float = 0.0) -> np.ndarray:
    return (np.arange(n * 3, dtype=np.float32).reshape(n, 3) + start)


async def hold_compute(batcher: Batcher, fake: FakeModel) -> asyncio.Task:
    """Starts a one-row request whose batch blocks in the compute thread until fake.gate is set."""
    fake.gate.clear()
    fake.entered.clear()
    task = asyncio.create_task(batcher.submit(rows(1, 1000)))
    await asyncio.to_thread(fake.entered.wait, 10)
    return task


async def test_lone_request_is_dispatched_at_once_even_with_a_long_delay(make):
    batcher, fake, _ = make()  # max_delay_s is an hour: waiting for company would time this test out
    out, sums = await asyncio.wait_for(batcher.submit(rows(2)), 10)
    np.testing.assert_array_equal(out, rows(2) * 2)
    assert fake.batches == [2]


async def test_waits_for_company_only_while_requests_are_arriving(make):
    batcher, fake, activity = make()
    with activity.arrival():  # a handler is still reading its body: the collector waits for it
        first = batcher.put(rows(1))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert fake.batches == []
        second = batcher.put(rows(2, 100))
    (a, _), (b, _) = await asyncio.wait_for(asyncio.gather(batcher.result(first), batcher.result(second)), 10)
    assert fake.batches == [3]
    np.testing.assert_array_equal(b, rows(2, 100) * 2)


async def test_requests_queued_while_compute_is_busy_share_the_next_batch(make):
    batcher, fake, _ = make()
    held = await hold_compute(batcher, fake)
    tasks = [asyncio.create_task(batcher.submit(rows(k + 1, 10 * k))) for k in range(3)]
    await asyncio.sleep(0)
    fake.gate.set()
    results = await asyncio.wait_for(asyncio.gather(held, *tasks), 10)
    assert fake.batches == [1, 6]
    for k, (out, sums) in enumerate(results[1:]):
        np.testing.assert_array_equal(out, rows(k + 1, 10 * k) * 2)
        np.testing.assert_array_equal(sums, rows(k + 1, 10 * k).sum(axis=1, keepdims=True))


async def test_large_request_is_split_into_batches_and_reassembled_in_order(make):
    batcher, fake, _ = make(max_batch_size=4)
    out, sums = await asyncio.wait_for(batcher.submit(rows(10)), 10)
    assert fake.batches == [4, 4, 2]
    np.testing.assert_array_equal(out, rows(10) * 2)
    assert sums.shape == (10, 1)


async def test_batches_never_exceed_max_batch_size(make):
    batcher, fake, _ = make(max_batch_size=5)
    held = await hold_compute(batcher, fake)
    tasks = [asyncio.create_task(batcher.submit(rows(2, k))) for k in range(6)]
    await asyncio.sleep(0)
    fake.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    await held
    assert max(fake.batches) <= 5 and sum(fake.batches[1:]) == 12
    for k, (out, _) in enumerate(results):
        np.testing.assert_array_equal(out, rows(2, k) * 2)


async def test_request_waiting_past_its_timeout_gets_504(make):
    batcher, fake, _ = make(timeout_s=0.05)
    held = await hold_compute(batcher, fake)
    with pytest.raises(Timeout):
        await asyncio.wait_for(batcher.submit(rows(1)), 10)
    fake.gate.set()
    with pytest.raises(Timeout):  # the held request also outlived its timeout
        await held
    out, _ = await asyncio.wait_for(batcher.submit(rows(1)), 10)  # the loop still serves
    np.testing.assert_array_equal(out, rows(1) * 2)


async def test_full_queue_refuses_at_once_with_503_and_retry_after(make):
    batcher, fake, _ = make(max_queue_items=4)
    held = await hold_compute(batcher, fake)
    accepted = batcher.put(rows(4))
    with pytest.raises(Overloaded) as refused:
        batcher.put(rows(1))
    assert refused.value.status == 503
    assert int(refused.value.headers["Retry-After"]) >= 1
    fake.gate.set()
    await asyncio.wait_for(batcher.result(accepted), 10)
    await held
    assert batcher.queued_items == 0


async def test_failing_batch_fails_only_its_requests_and_the_loop_survives(make):
    batcher, fake, _ = make()
    held = await hold_compute(batcher, fake)
    poisoned = asyncio.create_task(batcher.submit(np.full((1, 3), -1, np.float32)))
    await asyncio.sleep(0)
    fake.gate.set()
    await held
    with pytest.raises(Internal) as failed:
        await asyncio.wait_for(poisoned, 10)
    assert failed.value.status == 500 and failed.value.detail == "internal"
    out, _ = await asyncio.wait_for(batcher.submit(rows(1)), 10)
    np.testing.assert_array_equal(out, rows(1) * 2)


async def test_cancelled_requests_are_skipped(make):
    batcher, fake, _ = make()
    held = await hold_compute(batcher, fake)
    gone = asyncio.create_task(batcher.submit(rows(3)))
    kept = asyncio.create_task(batcher.submit(rows(2, 50)))
    await asyncio.sleep(0)
    gone.cancel()  # the client disconnected while queued
    await asyncio.sleep(0)
    fake.gate.set()
    out, _ = await asyncio.wait_for(kept, 10)
    await held
    assert fake.batches == [1, 2]
    np.testing.assert_array_equal(out, rows(2, 50) * 2)
    assert gone.cancelled()


async def test_abandoned_and_timed_out_requests_free_their_queue_room_at_once(make):
    batcher, fake, _ = make(max_queue_items=8, timeout_s=0.2)
    held = await hold_compute(batcher, fake)
    gone = asyncio.create_task(batcher.submit(rows(8)))
    await asyncio.sleep(0)
    assert batcher.queued_items == 8
    with pytest.raises(Overloaded):
        batcher.put(rows(1))
    gone.cancel()  # the client hung up while its rows were still queued
    await asyncio.sleep(0)
    assert batcher.queued_items == 0
    accepted = batcher.put(rows(8, 100))  # the whole bound is available again
    with pytest.raises(Timeout):
        await asyncio.wait_for(batcher.result(accepted), 10)
    assert batcher.queued_items == 0  # expired while queued: its room is free before any batch ran
    fake.gate.set()
    with pytest.raises(Timeout):
        await held
    assert fake.batches == [1]  # neither the abandoned nor the expired rows ever ran


async def test_one_timer_expires_requests_in_order_of_arrival(make):
    batcher, fake, _ = make(timeout_s=0.3)
    held = await hold_compute(batcher, fake)
    early = batcher.put(rows(1))
    await asyncio.sleep(0.2)
    late = batcher.put(rows(20))  # three chunks of max_batch_size 8
    loop = asyncio.get_running_loop()
    with pytest.raises(Timeout):
        await asyncio.wait_for(batcher.result(early), 10)
    assert not any(p.future.done() for p in late)  # its own deadline is 0.2 s later
    start = loop.time()
    with pytest.raises(Timeout):
        await asyncio.wait_for(batcher.result(late), 10)
    assert loop.time() - start >= 0.1
    assert all(p.future.done() for p in late) and batcher.queued_items == 0
    fake.gate.set()
    with pytest.raises(Timeout):
        await held
    out, _ = await asyncio.wait_for(batcher.submit(rows(1)), 10)  # answered requests leave no timer behind
    np.testing.assert_array_equal(out, rows(1) * 2)


async def test_close_runs_queued_work_first(make):
    batcher, fake, _ = make()
    held = await hold_compute(batcher, fake)
    queued = asyncio.create_task(batcher.submit(rows(2)))
    await asyncio.sleep(0)
    closing = asyncio.create_task(batcher.close())
    await asyncio.sleep(0)
    fake.gate.set()
    await asyncio.wait_for(closing, 10)
    out, _ = await queued
    await held
    np.testing.assert_array_equal(out, rows(2) * 2)


async def test_compute_thread_runs_its_initializer_in_that_thread_and_survives_its_failure(caplog):
    def broken() -> None:
        raise RuntimeError("no such CPU feature")

    started = []
    for initializer in (lambda: started.append(threading.current_thread().name), broken):
        compute = ComputeThread(Activity(), name=f"compute-{len(started)}", initializer=initializer)
        try:
            name, _ = await asyncio.wait_for(compute.run(lambda: threading.current_thread().name), 10)
        finally:
            compute.shutdown()
        assert name == compute._thread.name
    assert started == ["compute-0"]
    assert "initializer failed" in caplog.text


async def test_a_lone_image_goes_into_the_next_batch_ahead_of_queued_bulk_rows(make):
    batcher, fake, _ = make(max_batch_size=8)
    held = await hold_compute(batcher, fake)
    bulk = [batcher.put(rows(20, 100 * k)) for k in range(2)]  # five batches' worth, queued first
    single = batcher.put(rows(1, 7))
    fake.gate.set()
    out, _ = await asyncio.wait_for(batcher.result(single), 10)
    np.testing.assert_array_equal(out, rows(1, 7) * 2)
    first = next(i for i, x in enumerate(fake.inputs) if (x == rows(1, 7)).all(axis=1).any())
    assert first == 1  # the batch right after the held one: it never waited behind the 40 bulk rows
    results = await asyncio.wait_for(asyncio.gather(*(batcher.result(p) for p in bulk)), 10)
    await held
    for k, (out, _) in enumerate(results):
        np.testing.assert_array_equal(out, rows(20, 100 * k) * 2)  # slices from several batches, joined in order


async def test_fair_batches_stay_full_and_bulk_requests_finish_in_arrival_order(make):
    batcher, fake, _ = make(max_batch_size=8)
    held = await hold_compute(batcher, fake)
    finished = []
    tasks = [asyncio.create_task(batcher.submit(rows(n, 10 * k))) for k, n in enumerate((20, 20, 1, 3))]
    for k, task in enumerate(tasks):
        task.add_done_callback(lambda _, k=k: finished.append(k))
    await asyncio.sleep(0)
    fake.gate.set()
    await asyncio.wait_for(asyncio.gather(held, *tasks), 10)
    assert fake.batches[1:] == [8, 8, 8, 8, 8, 4]  # the small requests were folded into full batches
    assert finished[:2] == [2, 3] and finished[2:] == [0, 1]
    assert batcher.queued_items == 0


async def test_a_bulk_request_cancelled_midway_frees_the_rows_it_had_left(make):
    batcher, fake, _ = make(max_batch_size=8)
    held = await hold_compute(batcher, fake)
    gone = asyncio.create_task(batcher.submit(rows(20)))
    await until(lambda: batcher.queued_items == 20)
    released, fake.gate = fake.gate, threading.Event()  # the next batch (gone's first 8 rows) stops at a new gate
    fake.entered.clear()
    released.set()
    await held
    await asyncio.to_thread(fake.entered.wait, 10)
    assert fake.batches == [1, 8] and batcher.queued_items == 12  # the other 12 rows are provably still queued
    gone.cancel()  # the client hung up midway
    await asyncio.wait({gone}, timeout=10)
    assert gone.cancelled() and batcher.queued_items == 0
    fake.gate.set()
    out, _ = await asyncio.wait_for(batcher.submit(rows(2, 5)), 10)
    np.testing.assert_array_equal(out, rows(2, 5) * 2)
    assert fake.batches == [1, 8, 2]  # its 12 queued rows never ran
