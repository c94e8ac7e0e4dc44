"""The extension points of pv-harness, one pluggy hook each.

Every hook receives a `register` callable and calls it once per thing it adds, as in simonw/llm.
A plugin module implements any subset of these with `@hookimpl`, and is found either because it
is first-party (`pv_harness.default_plugins`) or through the `pv_harness` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "pv_harness"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_traits(register: Callable[[Any], None]) -> None:
    """Add traits.

    Call `register(trait)` with a `pv_harness.traits.model.Trait` or a dict of its fields (validated on
    registration). A trait becomes available to every task (`-T trait=NAME`) and to `pv traits`.
    """


@hookspec
def register_extraction_methods(register: Callable[..., None]) -> None:
    """Add ways of turning pooled pos/neg activations into a persona vector.

    Call `register(name, method)`, where `method` takes the per-layer pooled activations of the
    kept pos and neg samples and returns one `[num_layers + 1, hidden]` tensor per vector kind.
    The built-in method is the paper's mean difference (`mean_diff`).
    """


@hookspec
def register_judges(register: Callable[..., None]) -> None:
    """Add or replace judge scorers for a trait.

    Call `register(trait_name, scorer_factory, replace=False)`. `scorer_factory(trait)` returns an
    inspect `Scorer`; with `replace=True` it is used instead of the default trait judge, otherwise
    it runs beside it.
    """


@hookspec
def register_training_backends(register: Callable[..., None]) -> None:
    """Add fine-tuning backends for model organisms.

    Call `register(name, backend_factory)`; `backend_factory()` returns a
    `pv_harness.organisms.training.TrainingBackend`:
    `submit(TrainingRequest) -> Job`, `status(job) -> Job`, `wait(job) -> Job`; a succeeded `Job` carries the
    model id inspect should evaluate (`pv/<folder>`, `openai/ft:...`). Built in: `local`, `dummy`, `openai`,
    `tinker`.
    """


@hookspec
def register_training_datasets(register: Callable[..., None]) -> None:
    """Add sources of trait x strength training datasets for model organisms.

    Call `register(name, loader)`; `loader(trait, strength, *, sample_size=None, seed=0, **options)` returns
    a list of `{"messages": [...]}` chat examples ending in an assistant message, where strength is
    `baseline`, `mild` or `severe` and `options` come from the experiment config (`dataset_kwargs`).
    Built in: `paper` (the paper's `<trait>/{normal,misaligned_1,misaligned_2}.jsonl` folders) and
    `collected` (judged answers of our own collection logs).
    """
