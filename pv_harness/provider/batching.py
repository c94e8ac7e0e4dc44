"""Collect concurrent inspect requests into batches for one local model.

inspect calls `generate` once per sample, concurrently (up to max_connections). A worker thread takes the
first waiting request, keeps collecting while more keep arriving, and runs the batch; requests that arrive
meanwhile form the next batch as soon as it finishes. Collection ends at a quiet gap of `gap` seconds,
except that it waits up to `patience` seconds between arrivals while the batch is smaller than the last
one: the callers just answered usually come straight back (their samples' next requests), but inspect
needs some milliseconds per finished sample, and without patience a wave of 8 would split into 1 + 7.
`max_wait` caps any collection; `max_batch` caps the size. A continuous batcher hands the batch a `Feed`
as well: the running batch takes waiting requests from it between steps (`poll`, which never waits) and
answers each request as soon as it is done (`finish`). The torch work runs on the worker thread, so
the event loop stays free to accept requests. The thread is independent of any event loop, so one loaded
model serves successive `eval()` calls (each of which runs its own loop).

All waiting goes through the request queue's `get(timeout=...)` and all time through `clock`; tests pass
their own pair to drive a batcher with events instead of wall time.

At interpreter exit (after Ctrl-C, say) every live batcher drops the requests nobody waits for and joins its
worker: a thread still inside torch while the interpreter tears down aborts the process natively
(`terminate called without an active exception`).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, cast

import anyio

R = TypeVar("R")
T = TypeVar("T")


class Feed(Generic[R, T]):
    """A continuous batch's line to its batcher: more waiting requests for free slots, and early answers.

    Requests are numbered in the order the batch got them: those it started with, then each polled one.
    """

    def __init__(self, requests: queue.Queue[tuple[R, concurrent.futures.Future[T]] | None],
                 futures: list[concurrent.futures.Future[T]]) -> None:
        self._queue = requests
        self._futures = list(futures)
        self.stopped = False  # the batcher was closed meanwhile: it stops after this batch

    def poll(self, max_n: int) -> list[tuple[int, R]]:
        """Up to `max_n` waiting requests with their numbers, without waiting (cancelled ones skipped)."""
        got: list[tuple[int, R]] = []
        while len(got) < max_n and not self.stopped:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self.stopped = True
            elif item[1].set_running_or_notify_cancel():
                self._futures.append(item[1])
                got.append((len(self._futures) - 1, item[0]))
        return got

    def finish(self, index: int, result: T | BaseException) -> None:
        """Answer request `index` (an exception is raised to its caller)."""
        future = self._futures[index]
        if future.done():
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    def fail_unanswered(self, ex: BaseException) -> None:
        """Raise `ex` to every caller still waiting (the batch failed, or ended without answering them)."""
        for index in range(len(self._futures)):
            self.finish(index, ex)


class Batcher(Generic[R, T]):
    """Run `run_batch(requests) -> results` on a worker thread over batches of concurrent submissions.

    `continuous=True`: `run_batch(requests, feed) -> None` instead, answering every request through `feed`.
    """

    def __init__(self, run_batch: Callable[[list[R]], Sequence[T | BaseException]]
                 | Callable[[list[R], Feed[R, T]], None], *, max_batch: int = 32,
                 gap: float = 0.01, patience: float = 0.5, max_wait: float = 1.0,
                 name: str = "pv-batcher", clock: Callable[[], float] = time.monotonic,
                 requests: queue.Queue[tuple[R, concurrent.futures.Future[T]] | None] | None = None,
                 continuous: bool = False) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.run_batch = run_batch
        self.continuous = continuous
        self.max_batch = max_batch
        self.gap = gap
        self.patience = patience
        self.max_wait = max_wait
        self._expect = 1  # size of the last batch: how many callers are likely to come back
        self.name = name
        self.batch_sizes: list[int] = []  # for benchmarks and tests
        self._clock = clock
        self._queue: queue.Queue[tuple[R, concurrent.futures.Future[T]] | None] = (
            queue.Queue() if requests is None else requests)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        _live.add(self)

    async def submit(self, request: R) -> T:
        """Queue one request and wait for its result (an exception from the batch is raised here)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._ensure_thread()
        self._queue.put((request, future))
        return await _wait(future)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop the worker after the batches already queued, and wait for it."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None and thread.is_alive():
                self._queue.put(None)
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _abandon(self) -> None:
        """Cancel every queued request (at exit nobody waits for them), then close."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[1].cancel()
        self.close()

    def _collect(self, first: tuple[R, concurrent.futures.Future[T]]) -> tuple[list[Any], bool]:
        batch = [first]
        deadline = self._clock() + self.max_wait
        while len(batch) < self.max_batch:
            gap = self.patience if len(batch) < self._expect else self.gap
            wait = min(gap, deadline - self._clock())
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._collect(first)
            live = [(req, fut) for req, fut in batch if fut.set_running_or_notify_cancel()]
            if live and self.continuous:
                self.batch_sizes.append(len(live))
                self._expect = len(live)
                stop = self._run_continuous(live) or stop
            elif live:
                self.batch_sizes.append(len(live))
                self._expect = len(live)
                try:
                    run_batch = cast(Callable[[list[R]], Sequence[T | BaseException]], self.run_batch)
                    results = run_batch([req for req, _ in live])
                except BaseException as ex:  # noqa: BLE001 - hand any failure to every waiting request
                    for _, fut in live:
                        fut.set_exception(ex)
                else:
                    for (_, fut), result in zip(live, results, strict=True):
                        if isinstance(result, BaseException):
                            fut.set_exception(result)
                        else:
                            fut.set_result(result)
            if stop:
                return

    def _run_continuous(self, live: list[tuple[R, concurrent.futures.Future[T]]]) -> bool:
        """Run one continuous batch; whether the batcher was closed while it ran."""
        feed: Feed[R, T] = Feed(self._queue, [fut for _, fut in live])
        try:
            cast(Callable[[list[R], Feed[R, T]], None], self.run_batch)([req for req, _ in live], feed)
        except BaseException as ex:  # noqa: BLE001 - hand any failure to every request still waiting
            feed.fail_unanswered(ex)
        else:
            feed.fail_unanswered(RuntimeError(f"{self.name}: the batch ended without answering this request"))
        return feed.stopped


_live: weakref.WeakSet[Batcher[Any, Any]] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for batcher in list(_live):
        batcher._abandon()


async def _wait(future: concurrent.futures.Future[T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # not asyncio (trio)
    else:
        return await asyncio.wrap_future(future)
    while not future.done():  # trio and others: poll, briefly
        await anyio.sleep(0.005)
    return future.result()
