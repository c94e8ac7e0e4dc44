"""`pv_harness/prompt_monitor`: the paper's last-prompt-token monitoring experiment.

    inspect eval pv_harness/prompt_monitor --model pv/smollm2 --model-role grader=... \\
        -T trait=evil -T vector=vectors/smollm2/evil.safetensors -T layer=20

System prompts of graded strength x the trait's held-out questions: for question q, three samples, the pos
persona prompt of instruction pair q mod P, the neg persona prompt of the same pair, and no system prompt.
The pv/ provider projects the last prompt token's activation at `layer` onto the persona vector before it
generates (`pv_monitor` metadata: `prompt_last`, and each answer token's projection); the judges score the
answer, and the `projection` scorer logs the projections as score columns for `inspect view`.
`pv_harness.reports.monitor.write_prompt_monitor_report` then asks the paper's question: does the
projection before generating predict the trait score of what follows?

Sample metadata: ``trait``, ``version`` (`eval`), ``question_id``, ``question``, ``instruction_id`` (None
without a system prompt), ``strength`` (`pos`, `neg` or `none`), ``system_prompt`` (None for none). Sample ids:
``{trait}_{q}_{strength}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inspect_ai import Epochs, Task, task
from inspect_ai._util.error import PrerequisiteError
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessageSystem, ChatMessageUser, GenerateConfig, Model, get_model
from inspect_ai.solver import Generate, Solver, TaskState, generate, solver
from pv_harness.scorers.judge import MIN_MASS, is_pv_model
from pv_harness.scorers.likelihood import LIKELIHOOD_PAIRS
from pv_harness.scorers.projection import projection
from pv_harness.solvers.preflight import check_grader, eval_context_model
from pv_harness.tasks.persona import (
    _judge_mode,
    _number,
    _positive_int,
    _scorers,
    _trait,
    system_prompt,
)
from pv_harness.tasks.steering_sweep import _numbers

from pv_harness.traits.model import Trait

STRENGTHS = ("pos", "neg", "none")
VERSION = "eval"  # held-out questions: the vector never saw them


def _check_pv_model(model: Model) -> None:
    if not is_pv_model(model):
        raise PrerequisiteError(f"prompt_monitor reads the model's activations, so it needs a pv/ model; the model "
                                f"is {str(model)!r}. Run with --model pv/<model>.")


@solver
def monitor_preflight(judge_mode: str) -> Solver:
    """Fail the sample before generation when the judge cannot work or the model cannot be monitored."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        check_grader(judge_mode)
        _check_pv_model(get_model())
        return state

    return solve


def _layer(value: Any) -> int:
    layer = int(value) if isinstance(value, str) and value.strip().isdigit() else value
    if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
        raise PrerequisiteError(f"layer must be a non-negative integer (hidden-states convention: l = output of "
                                f"block l); got {value!r}")
    return layer


def prompt_monitor_samples(trait: Trait, questions: int | None = None) -> list[Sample]:
    """Per held-out question: its pair's pos persona prompt, the same pair's neg one, and no system prompt."""
    qs = trait.questions(VERSION)[:questions]
    samples = []
    for q, question in enumerate(qs):
        i = q % len(trait.instructions)
        pair = trait.instructions[i]
        for strength in STRENGTHS:
            system = (None if strength == "none"
                      else system_prompt(trait.assistant_name(strength), getattr(pair, strength)))
            samples.append(Sample(
                id=f"{trait.name}_{q}_{strength}",
                input=question if system is None else [ChatMessageSystem(content=system),
                                                       ChatMessageUser(content=question)],
                metadata={"trait": trait.name, "version": VERSION, "question_id": q, "question": question,
                          "instruction_id": None if system is None else i, "strength": strength,
                          "system_prompt": system},
            ))
    return samples


@task
def prompt_monitor(
    trait: str | None = None,
    vector: str | None = None,
    layer: int | None = None,
    questions: int | None = None,
    n_per_question: int = 1,
    temperature: float = 1.0,
    max_tokens: int = 256,
    judge_mode: str = "auto",
    judge_min_mass: float = MIN_MASS,
    likelihood_pairs: int = LIKELIHOOD_PAIRS,
    compare_layers: Any = None,
) -> Task:
    """Monitor the last prompt token's projection under pos, neg and no persona prompts, and judge the answers.

    Args:
        trait: A registered trait (`pv traits list`).
        vector: The persona-vector file (from `pv extract`).
        layer: The layer to monitor (required; hidden-states convention: l = output of block l).
        questions: Use only the first N of the trait's held-out questions (default: all).
        n_per_question: Answers per question and system prompt (inspect epochs).
        temperature: Sampling temperature.
        max_tokens: Longest answer.
        judge_mode: `auto`, `logprob`, `continuation`, `text` or `likelihood` (see persona_collect).
        judge_min_mass: Unscored below this numeric probability mass (paper: 0.25; see persona_collect).
        likelihood_pairs: With judge_mode=likelihood, the first N instruction pairs to score under (0 = all).
        compare_layers: More layers to monitor in the same generations (e.g. every swept layer), so the page can
            show r at each; `layer` stays the headline.
    """
    definition = _trait(trait)
    if not vector:
        raise PrerequisiteError("prompt_monitor needs -T vector=PATH (a vector file from `pv extract`)")
    path = Path(str(vector)).expanduser()
    if not path.is_file():
        raise PrerequisiteError(f"vector: no such file {str(path)!r}")
    if layer is None:
        raise PrerequisiteError("prompt_monitor needs -T layer=L (the layer to monitor; `pv report sweep` picks one)")
    monitored = _layer(layer)
    count = None if questions is None else _positive_int("questions", questions)
    epochs = _positive_int("n_per_question", n_per_question)
    judge_mode = _judge_mode(judge_mode)
    model = eval_context_model()
    if model is not None:  # inside `inspect eval`: check now; built in Python, the setup solver checks
        check_grader(judge_mode)
        _check_pv_model(model)
    others = [] if compare_layers is None else [_layer(x) for x in _numbers("compare_layers", compare_layers, int)]
    layers = [monitored, *sorted(set(others) - {monitored})]
    monitor = [{"vector": str(path.resolve()), "layer": x} for x in layers]
    return Task(
        dataset=MemoryDataset(prompt_monitor_samples(definition, count), name=f"{definition.name}_prompt_monitor"),
        setup=monitor_preflight(judge_mode),
        solver=generate(),
        scorer=[*_scorers(definition.name, judge_mode, judge_min_mass, likelihood_pairs=likelihood_pairs),
                projection()],
        config=GenerateConfig(temperature=_number("temperature", temperature),
                              max_tokens=_positive_int("max_tokens", max_tokens),
                              extra_body={"pv": {"monitor": monitor}}),
        epochs=Epochs(epochs),
        metadata={"pv_task": "prompt_monitor", "trait": definition.name, "version": VERSION,
                  "vector": str(path.resolve()), "layer": monitored, "layers": layers, "n_per_question": epochs,
                  "judge_mode": judge_mode},
    )
