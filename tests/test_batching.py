"""The request batcher, driven by events: which requests share a batch, and how long it waits for more."""

from __future__ import annotations

import asyncio

from pv_harness.provider.batching import Batcher

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
