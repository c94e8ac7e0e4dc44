"""The request batcher, driven by events: which requests share a batch, and how long it waits for more."""

from __future__ import annotations

import asyncio

from pv_harness.provider.batching import Batcher, Feed

from .batching_events import QuietQueue

GAP, PATIENCE = 0.01, 0.5


def test_a_lone_request_waits_only_the_gap_and_waiting_requests_share_batches() -> None:
    requests = QuietQueue(quiet_after=[1, 7])
    sizes: list[int] = []

    def run_batch(items: list[int]) -> list[int | BaseException]:
        sizes.append(len(items))
        return [ValueError("odd") if i == 13 else i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(run_batch, max_batch=4, gap=GAP, patience=PATIENCE, clock=requests.clock,
                                         requests=requests)

    async def main() -> tuple[int, list[int | BaseException]]:
        first = await batcher.submit(1)
        rest = await asyncio.gather(*[batcher.submit(i) for i in (2, 3, 4, 5, 6, 13)], return_exceptions=True)
        return first, rest

    first, rest = asyncio.run(main())
    batcher.close()
    assert first == 10
    assert rest[:5] == [20, 30, 40, 50, 60] and isinstance(rest[5], ValueError) and str(rest[5]) == "odd"
    assert sizes == [1, 4, 2]  # alone; then max_batch; then the rest
    # the lone first request waited one quiet gap, never the patience kept for callers coming back;
    # the full batch of 4 stopped collecting without a wait; after it, 2 requests waited patiently for more
    assert requests.waits == [GAP, GAP, GAP, GAP, PATIENCE, PATIENCE]
    assert requests.now == GAP + PATIENCE


def test_the_batcher_waits_patiently_for_the_callers_it_just_answered() -> None:
    """Four callers, three turns each, coming back at different moments: every turn is one batch of 4."""
    requests = QuietQueue(quiet_after=[4, 8, 12])
    batcher: Batcher[int, int] = Batcher(lambda items: items, max_batch=8, gap=GAP, patience=PATIENCE,
                                         clock=requests.clock, requests=requests)

    async def caller(i: int) -> list[int]:
        answers = []
        for _ in range(3):
            answers.append(await batcher.submit(i))
            for _ in range(i):  # some work between turns: caller i comes back i loop turns later
                await asyncio.sleep(0)
        return answers

    async def main() -> list[list[int]]:
        return await asyncio.gather(*[caller(i) for i in range(4)])

    assert asyncio.run(main()) == [[i] * 3 for i in range(4)]
    batcher.close()
    assert batcher.batch_sizes == [4, 4, 4]
    # first wave: the quiet gap after each arrival; later waves: patience until the 4 answered callers are back
    assert requests.waits == [GAP] * 4 + [PATIENCE, PATIENCE, PATIENCE, GAP] * 2


def test_a_continuous_batch_takes_waiting_requests_and_answers_each_as_it_ends() -> None:
    """Six requests, two slots: one batch serves them all, each polled request numbered in arrival order."""
    requests = QuietQueue(quiet_after=[6])
    polled: list[list[tuple[int, int]]] = []

    def run(items: list[int], feed: Feed[int, int]) -> None:
        slots = list(enumerate(items))
        answered = 0
        while answered < 6:  # the others may still be arriving: a real batch would be decoding meanwhile
            if slots:
                k, item = slots.pop(0)
                feed.finish(k, ValueError("odd") if item == 13 else item * 10)
                answered += 1
            got = feed.poll(2 - len(slots))
            if got:
                polled.append(got)
            slots += got

    batcher: Batcher[int, int] = Batcher(run, max_batch=2, gap=GAP, patience=PATIENCE, clock=requests.clock,
                                         requests=requests, continuous=True)

    async def main() -> list[int | BaseException]:
        return await asyncio.gather(*[batcher.submit(i) for i in (1, 2, 3, 13, 5, 6)], return_exceptions=True)

    results = asyncio.run(main())
    batcher.close()
    assert results[:3] == [10, 20, 30] and results[4:] == [50, 60]
    assert isinstance(results[3], ValueError) and str(results[3]) == "odd"
    assert batcher.batch_sizes == [2]  # the first two started the batch; the other four joined it
    assert [k for got in polled for k, _ in got] == [2, 3, 4, 5]
    assert [item for got in polled for _, item in got] == [3, 13, 5, 6]


def test_a_continuous_batch_that_fails_or_forgets_a_request_fails_it_clearly() -> None:
    def fail(items: list[int], feed: Feed[int, int]) -> None:
        feed.finish(0, 1)
        raise RuntimeError("the model broke")

    def forget(items: list[int], feed: Feed[int, int]) -> None:
        feed.finish(1, 2)

    for run, message in [(fail, "the model broke"), (forget, "test-batcher: the batch ended without answering")]:
        requests = QuietQueue(quiet_after=[2])
        batcher: Batcher[int, int] = Batcher(run, max_batch=2, clock=requests.clock, requests=requests,
                                             continuous=True, name="test-batcher")

        async def main(batcher: Batcher[int, int]) -> list[int | BaseException]:
            return await asyncio.gather(*[batcher.submit(i) for i in (1, 2)], return_exceptions=True)

        first, second = asyncio.run(main(batcher))
        batcher.close()
        answered, lost = (first, second) if run is fail else (second, first)
        assert answered == (1 if run is fail else 2)
        assert isinstance(lost, RuntimeError) and str(lost).startswith(message)
