"""`pv_harness/steering_sweep`: the trait's held-out questions x layers x coefficients, each steered.

    inspect eval pv_harness/steering_sweep --model pv/smollm2 --model-role grader=... \\
        -T trait=evil -T vector=vectors/smollm2/evil.safetensors -T 'layers=[10,15,20]' -T 'coefs=[0,1,2]'

Every sample carries its own steering in the generate config's `extra_body`, so one eval covers the
whole grid (and each setting is part of inspect's cache key). Coefficient 0 is the same unsteered answer
at every layer, so each question's baseline is generated once (setting `baseline`, layer None) and serves
as every layer's coef-0 cell. Trait and coherence are judged as in the detection eval; metrics are grouped
per setting (`baseline_mean`, `L20 c1.5_mean`, ...). `pv report sweep LOG` plots them and picks the layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inspect_ai import Epochs, Task, task
from inspect_ai._util.error import PrerequisiteError
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import GenerateConfig
from inspect_ai.solver import Generate, Solver, TaskState, solver
from pv_harness.scorers.judge import MIN_MASS
from pv_harness.scorers.likelihood import LIKELIHOOD_PAIRS
from pv_harness.scorers.metrics import grouped_judge_stats
from pv_harness.solvers.preflight import preflight
from pv_harness.tasks.persona import (
    STEER_POSITIONS,
    _choice,
    _early_checks,
    _judge_mode,
    _number,
    _positive_int,
    _scorers,
    _trait,
)

SETTING = "setting"
BASELINE = "baseline"  # the setting of the unsteered answers, every layer's coef-0 cell


def setting_label(layer: int, coef: float) -> str:
    return f"L{layer} c{coef:g}"


def _numbers(option: str, value: Any, cast: type) -> list:
    """`[10, 12]` (from `-T 'layers=[10,12]'`), `"10,12"` (from `-T layers=10,12`) or one number."""
    items = value if isinstance(value, list | tuple) else str(value).replace(" ", "").strip("[]").split(",")
    try:
        out = [cast(float(x)) if cast is int else cast(x) for x in items if str(x) != ""]
    except (TypeError, ValueError) as ex:
        raise PrerequisiteError(f"{option} must be a list of numbers, got {value!r}") from ex
    if not out:
        raise PrerequisiteError(f"{option} is empty")
    return out


@solver
def steered_generate(vector: str, positions: str) -> Solver:
    """Generate with the sample's own (layer, coef) steering; a baseline sample (layer None) is unsteered."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        meta = state.metadata
        if meta["layer"] is None:
            return await generate(state)
        step = {"vector": vector, "layer": meta["layer"], "coef": meta["coef"], "positions": positions}
        return await generate(state, extra_body={"pv": {"steer": [step]}})

    return solve


@task
def steering_sweep(
    trait: str | None = None,
    vector: str | None = None,
    layers: Any = (10, 15, 20),
    coefs: Any = (0.0, 1.0, 2.0),
    positions: str = "response",
    questions: int | None = None,
    n_per_question: int = 1,
    temperature: float = 1.0,
    max_tokens: int = 256,
    version: str = "eval",
    judge_mode: str = "auto",
    judge_min_mass: float = MIN_MASS,
    likelihood_pairs: int = LIKELIHOOD_PAIRS,
) -> Task:
    """Steer with a persona vector at each layer x coefficient and judge trait and coherence.

    Args:
        trait: A registered trait (`pv traits list`).
        vector: The persona-vector file (from `pv extract`).
        layers: Layers to steer (hidden-states convention: l = output of block l).
        coefs: Steering coefficients (0 = unsteered baseline; negative suppresses the trait).
        positions: `response` (last prompt token and generated tokens), `all` or `prompt`.
        questions: Use only the first N of the trait's questions (default: all).
        n_per_question: Answers per question and setting (inspect epochs).
        temperature: Sampling temperature.
        max_tokens: Longest answer.
        version: `eval` (held-out questions, default) or `extract`.
        judge_mode: `auto`, `logprob`, `continuation`, `text` or `likelihood` (see persona_collect).
        judge_min_mass: Unscored below this numeric probability mass (paper: 0.25; see persona_collect).
        likelihood_pairs: With judge_mode=likelihood, the first N instruction pairs to score under (0 = all).
    """
    definition = _trait(trait)
    if not vector:
        raise PrerequisiteError("steering_sweep needs -T vector=PATH (a vector file from `pv extract`)")
    path = Path(str(vector)).expanduser()
    if not path.is_file():
        raise PrerequisiteError(f"vector: no such file {str(path)!r}")
    layer_list = _numbers("layers", layers, int)
    coef_list = _numbers("coefs", coefs, float)
    positions = _choice("positions", positions, STEER_POSITIONS)
    epochs = _positive_int("n_per_question", n_per_question)
    judge_mode = _judge_mode(judge_mode)
    _early_checks(judge_mode, steering=True)
    qs = definition.questions(version)
    if questions is not None:
        qs = qs[: _positive_int("questions", questions)]
    def sample(q: int, question: str, layer: int | None, coef: float) -> Sample:
        label = BASELINE if layer is None else setting_label(layer, coef)
        return Sample(id=f"{definition.name}_{q}_{label.replace(' ', '_')}", input=question,
                      metadata={"trait": definition.name, "version": version, "question_id": q, "question": question,
                                "layer": layer, "coef": coef, SETTING: label, "system_prompt": None})

    steered = [coef for coef in coef_list if coef != 0]
    samples = [sample(q, question, None, 0.0) for q, question in enumerate(qs)] if len(steered) < len(coef_list) else []
    samples += [sample(q, question, layer, coef) for layer in layer_list for coef in steered
                for q, question in enumerate(qs)]
    return Task(
        dataset=MemoryDataset(samples, name=f"{definition.name}_steering_sweep"),
        setup=preflight(judge_mode, steering=True),
        solver=steered_generate(str(path.resolve()), positions),
        scorer=_scorers(definition.name, judge_mode, judge_min_mass, likelihood_pairs=likelihood_pairs),
        metrics=[grouped_judge_stats(SETTING)],
        config=GenerateConfig(temperature=_number("temperature", temperature),
                              max_tokens=_positive_int("max_tokens", max_tokens)),
        epochs=Epochs(epochs),
        metadata={"pv_task": "steering_sweep", "trait": definition.name, "vector": str(path.resolve()),
                  "layers": layer_list, "coefs": coef_list, "positions": positions},
    )
