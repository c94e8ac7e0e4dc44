"""A run seed gives every sample its own seed: n answers to one question differ, and a rerun repeats them."""

from __future__ import annotations

from pathlib import Path

import pytest
from inspect_ai import eval
from pv_harness.scorers.testing import distribution_logprobs, grader_output, mock_grader
from pv_harness.tasks.persona import persona_collect

from pv_harness.provider.api import sample_seed


def fixed_grader():
    return mock_grader(lambda prompt, config: grader_output(top_logprobs=distribution_logprobs({"30": 1.0})))


def answers(model_dir: Path, seed: int, **options) -> dict[tuple[str, int], str]:
    task = persona_collect(trait="evil", polarity="pos", n_per_question=3, max_tokens=8, temperature=1.0)
    (log,) = eval(task, model=f"pv/{model_dir}", model_roles={"grader": fixed_grader()}, limit=2, seed=seed,
                  display="none", **options)
    assert log.status == "success", log.error
    return {(str(s.id), s.epoch): s.output.completion for s in log.samples}


@pytest.fixture(scope="module")
def seeded(tiny_model_dir: Path) -> dict[tuple[str, int], str]:
    return answers(tiny_model_dir, seed=0)


def test_the_n_answers_to_one_question_differ(seeded: dict[tuple[str, int], str]) -> None:
    ids = {sample_id for sample_id, _ in seeded}
    assert len(ids) == 2 and len(seeded) == 6
    for sample_id in ids:
        epochs = [seeded[(sample_id, epoch)] for epoch in (1, 2, 3)]
        assert len(set(epochs)) == 3, epochs


def test_a_rerun_with_the_seed_repeats_every_answer_and_another_seed_does_not(
        tiny_model_dir: Path, seeded: dict[tuple[str, int], str]) -> None:
    assert answers(tiny_model_dir, seed=0) == seeded
    other = answers(tiny_model_dir, seed=1)
    assert other.keys() == seeded.keys() and all(other[k] != seeded[k] for k in seeded)


def test_batching_does_not_change_the_answers(tiny_model_dir: Path, seeded: dict[tuple[str, int], str]) -> None:
    assert answers(tiny_model_dir, seed=0, max_connections=1) == seeded  # one request at a time: batches of 1


def test_sample_seed_outside_a_sample_is_the_run_seed() -> None:
    assert sample_seed(None) is None
    assert sample_seed(5) == 5
