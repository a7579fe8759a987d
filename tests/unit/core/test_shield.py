"""complete_before_cancel: a write finishes, and its outcome is recorded, before a cancellation goes on."""

from __future__ import annotations

import asyncio

import pytest

from replicator.core.shield import complete_before_cancel


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_caller_waits_for_the_write_then_is_cancelled() -> None:
    """Cancelled twice mid-write, the caller returns only after the write and raises CancelledError."""
    reply = asyncio.Event()
    done: list[str] = []

    async def write() -> str:
        await reply.wait()
        done.append("written")
        return "ok"

    caller = asyncio.create_task(complete_before_cancel(write()))
    await _settle()
    caller.cancel()
    await _settle()
    caller.cancel()
    await _settle()
    assert not caller.done()
    reply.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert done == ["written"]


async def test_without_cancellation_the_result_and_the_error_pass_through() -> None:
    """The write's result is returned and its error raised unchanged."""

    async def ok() -> int:
        return 7

    async def fails() -> None:
        raise KeyError("x")

    assert await complete_before_cancel(ok()) == 7
    with pytest.raises(KeyError):
        await complete_before_cancel(fails())


async def test_a_cancellation_wins_over_the_writes_own_error() -> None:
    """A write that fails after its caller was cancelled ends the caller with CancelledError."""
    reply = asyncio.Event()

    async def fails() -> None:
        await reply.wait()
        raise KeyError("x")

    caller = asyncio.create_task(complete_before_cancel(fails()))
    await _settle()
    caller.cancel()
    await _settle()
    reply.set()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_a_timeout_around_the_write_still_reports_timeout() -> None:
    """asyncio.timeout sees its own cancellation come back, after the write, as TimeoutError."""
    done: list[str] = []

    async def slow() -> None:
        await asyncio.sleep(0.1)
        done.append("written")

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await complete_before_cancel(slow())
    assert done == ["written"]


def test_closing_a_cancelled_caller_lets_generator_exit_through() -> None:
    """A pending caller destroyed at loop close (GeneratorExit) after a cancel is not turned into CancelledError."""
    loop = asyncio.new_event_loop()
    gate = asyncio.Event()
    coro = complete_before_cancel(gate.wait())
    caller = loop.create_task(coro)
    try:
        loop.run_until_complete(asyncio.sleep(0.01))
        caller.cancel()
        loop.run_until_complete(asyncio.sleep(0.01))
        assert not caller.done()  # the cancel is remembered; the write is still awaited
        coro.close()  # what destroying the pending task does: must return quietly
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
