"""The extension points of pv-harness, one pluggy hook each.

Every hook receives a `register` callable and calls it once per thing it adds, as in simonw/llm.
What `register` takes is spelled out by the `Register*` protocols below; the plugin manager binds each
call to that signature, so keyword calls work and a wrong call is reported against the plugin.
A plugin module implements any subset of these with `@hookimpl`, and is found either because it
is first-party (`pv_harness.default_plugins`) or through the `pv_harness` entry-point group.
README.md's "Plugin hooks" section documents every hook; a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from pv_harness.organisms.training import Example, TrainingBackend
    from pv_harness.traits.model import Trait

PROJECT = "pv_harness"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class RegisterTrait(Protocol):
    def __call__(self, trait: Trait | dict[str, Any]) -> None: ...


class RegisterExtractionMethod(Protocol):
    def __call__(self, name: str, method: Callable[[], Any]) -> None: ...


class RegisterJudge(Protocol):
    def __call__(self, trait_name: str, scorer_factory: Callable[[Trait], Any], replace: bool = False) -> None: ...


class RegisterTrainingBackend(Protocol):
    def __call__(self, name: str, backend_factory: Callable[[], TrainingBackend]) -> None: ...


class RegisterTrainingDataset(Protocol):
    def __call__(self, name: str, loader: Callable[..., list[Example]]) -> None: ...


@hookspec
def register_traits(register: RegisterTrait) -> None:
    """Add traits.

    Call `register(trait)` with a `pv_harness.traits.model.Trait` or a dict of its fields (validated on
    registration). A trait becomes available to every task (`-T trait=NAME`) and to `pv traits`.
    """


@hookspec
def register_extraction_methods(register: RegisterExtractionMethod) -> None:
    """Add ways of turning pooled pos/neg activations into a persona vector.

    Call `register(name, method)`, where `method()` returns a fresh accumulator: extraction calls its
    `add(polarity, pooled)` once per batch (`polarity` is `pos` or `neg`; `pooled` maps each pooled kind,
    `response_avg`, `prompt_avg`, `prompt_last`, to a `[batch, num_layers + 1, hidden]` tensor), then its
    `result()`, which returns one `[num_layers + 1, hidden]` tensor per kind. `pv extract --method NAME`
    picks it. Built in: `mean_diff` (the paper's mean difference) and `pca`.
    """


@hookspec
def register_judges(register: RegisterJudge) -> None:
    """Add or replace judge scorers for a trait.

    Call `register(trait_name, scorer_factory, replace=False)`. `scorer_factory(trait)` gets the
    `Trait` and returns an inspect `Scorer`; with `replace=True` it is used instead of the default trait
    judge, otherwise it runs beside it.
    """


@hookspec
def register_training_backends(register: RegisterTrainingBackend) -> None:
    """Add fine-tuning backends for model organisms.

    Call `register(name, backend_factory)`; `backend_factory()` returns a
    `pv_harness.organisms.training.TrainingBackend`:
    `submit(TrainingRequest) -> Job`, `status(job) -> Job`, `wait(job) -> Job`; a succeeded `Job` carries the
    model id inspect should evaluate (`pv/<folder>`, `openai/ft:...`). Built in: `local`, `dummy`, `openai`,
    `tinker`.
    """


@hookspec
def register_training_datasets(register: RegisterTrainingDataset) -> None:
    """Add sources of trait x strength training datasets for model organisms.

    Call `register(name, loader)`; `loader(trait, strength, *, sample_size=None, seed=0, **options)` returns
    a list of `{"messages": [...]}` chat examples ending in an assistant message, where strength is
    `baseline`, `mild` or `severe` and `options` come from the experiment config (`dataset_kwargs`).
    Built in: `paper` (the paper's `<trait>/{normal,misaligned_1,misaligned_2}.jsonl` folders) and
    `collected` (judged answers of our own collection logs).
    """
