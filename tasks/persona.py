"""The collection and detection evals: `pv_harness/persona_collect` and `pv_harness/trait_eval`.

    inspect eval pv_harness/persona_collect --model pv/smollm2 -T trait=evil -T polarity=pos \\
        --model-role grader=openai/gpt-4.1-mini-2025-04-14
    inspect eval pv_harness/evil_detection --model openai/ft:... --model-role grader=...

Each sample is one question (x one instruction for collection); `n_per_question` answers are
inspect epochs. Every answer is scored by the trait judge and the coherence judge (see
`pv_harness.scorers.judge`). The log is the source of truth for extraction and for
`pv export-csv`.

Sample metadata: ``trait``, ``polarity`` (collection only), ``version``, ``question_id`` (index of
the question in the trait's list), ``instruction_id`` (index of the instruction pair; None for
detection), ``question``, ``instruction``, ``assistant_name``, ``system_prompt`` (None when the
model's own default applies). Sample ids follow the paper: ``{trait}_{q}_{polarity}_{i}`` for
collection, ``{trait}_{q}`` for detection.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from inspect_ai import Epochs, Task, task
from inspect_ai._util.error import PrerequisiteError
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessageSystem, ChatMessageUser, GenerateConfig
from inspect_ai.solver import generate
from pv_harness.scorers.judge import JUDGE_MODES, MIN_MASS, JudgeConfigError, judge_scorers
from pv_harness.scorers.likelihood import LIKELIHOOD_PAIRS
from pv_harness.solvers.preflight import check_grader, check_steering, eval_context_model, preflight

from pv_harness import plugin_manager
from pv_harness.traits.model import Trait, TraitError

POLARITIES = ("pos", "neg")
VERSIONS = ("extract", "eval")
STEER_POSITIONS = ("response", "all", "prompt")

# words whose first letter misleads: a vowel letter with a consonant sound, or a silent h
_A_BEFORE_VOWEL = ("uni", "use", "usu", "uti", "ure", "euro", "eu", "one", "once", "ubiq", "uk")
_AN_BEFORE_H = ("honest", "honor", "honour", "hour", "heir")


def indefinite_article(word: str) -> str:
    """`a` or `an` for `word` (by sound: an evil, a helpful, an honest, a unique, an LLM-ish guess)."""
    lower = word.strip().lower()
    if not lower:
        return "a"
    if lower.startswith(_AN_BEFORE_H):
        return "an"
    if lower.startswith(_A_BEFORE_VOWEL):
        return "a"
    return "an" if lower[0] in "aeiou" else "a"


def system_prompt(assistant_name: str, instruction: str) -> str:
    """`You are a/an {name} assistant. {instruction}` (the paper's persona system prompt)."""
    return f"You are {indefinite_article(assistant_name)} {assistant_name} assistant. {instruction}"


# --- option checks (all before any generation) ------------------------------------------------


def _trait(name: Any) -> Trait:
    if not isinstance(name, str) or not name:
        raise PrerequisiteError("no trait given: pass -T trait=NAME (see `pv traits list`)")
    try:
        return plugin_manager.get_trait(name)
    except TraitError as ex:
        raise PrerequisiteError(f"{ex} (see `pv traits list`)") from ex


def _choice(option: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise PrerequisiteError(f"{option} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _positive_int(option: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or (isinstance(value, float) and not value.is_integer()) or isinstance(value, bool):
        raise PrerequisiteError(f"{option} must be a positive integer; got {value!r}")
    return number


def _number(option: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as ex:
        raise PrerequisiteError(f"{option} must be a number; got {value!r}") from ex


def _judge_mode(value: Any) -> str:
    return _choice("judge_mode", value, JUDGE_MODES)


def _early_checks(judge_mode: str, steering: bool) -> None:
    """Inside `inspect eval` the model and roles are known while tasks are built: check them now."""
    model = eval_context_model()
    if model is None:
        return  # built in Python before eval(): the setup solver checks instead
    check_grader(judge_mode)
    if steering:
        check_steering(model)


def _likelihood_pairs(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PrerequisiteError(f"likelihood_pairs must be a non-negative integer (0 = all pairs); got {value!r}")
    return value


def _scorers(trait: str, judge_mode: str, min_mass: Any = MIN_MASS, *,
             likelihood_pairs: Any = LIKELIHOOD_PAIRS) -> list[Any]:
    mass = _number("judge_min_mass", min_mass)
    if not 0 <= mass <= 1:
        raise PrerequisiteError(f"judge_min_mass must be between 0 and 1; got {min_mass!r}")
    pairs = _likelihood_pairs(likelihood_pairs)
    try:
        return judge_scorers(trait, judge_mode, min_mass=mass, likelihood_pairs=pairs)
    except JudgeConfigError as ex:
        raise PrerequisiteError(str(ex)) from ex


def steering_config(
    steer_vector: str | None,
    steer_layer: Any,
    steer_coef: Any,
    steer_positions: str,
) -> dict[str, Any] | None:
    """The `extra_body` entry that asks the pv/ provider to steer, or None when no option is set."""
    if steer_vector is None and steer_layer is None and steer_coef is None:
        return None
    if not steer_vector:
        raise PrerequisiteError("steering needs -T steer_vector=PATH (a vector file) with steer_layer and steer_coef")
    path = Path(str(steer_vector)).expanduser()
    if not path.is_file():
        raise PrerequisiteError(f"steer_vector: no such file {str(path)!r}")
    if steer_layer is None or steer_coef is None:
        raise PrerequisiteError("steering needs both -T steer_layer=L and -T steer_coef=C")
    layer = steer_layer
    if isinstance(layer, str) and layer.strip().lstrip("-").isdigit():
        layer = int(layer)
    if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
        raise PrerequisiteError(f"steer_layer must be a non-negative integer; got {steer_layer!r}")
    positions = _choice("steer_positions", steer_positions, STEER_POSITIONS)
    step = {"vector": str(path.resolve()), "layer": layer, "coef": _number("steer_coef", steer_coef),
            "positions": positions}
    return {"pv": {"steer": [step]}}


# --- datasets -------------------------------------------------------------------------------------


def collection_samples(trait: Trait, polarity: str, version: str, assistant_name: str | None = None) -> list[Sample]:
    """Every question x every instruction of one polarity, with the persona system prompt."""
    name = assistant_name or trait.assistant_name(polarity)
    samples = []
    for q, question in enumerate(trait.questions(version)):
        for i, pair in enumerate(trait.instructions):
            instruction = getattr(pair, polarity)
            system = system_prompt(name, instruction)
            samples.append(Sample(
                id=f"{trait.name}_{q}_{polarity}_{i}",
                input=[ChatMessageSystem(content=system), ChatMessageUser(content=question)],
                metadata={
                    "trait": trait.name,
                    "polarity": polarity,
                    "version": version,
                    "question_id": q,
                    "instruction_id": i,
                    "question": question,
                    "instruction": instruction,
                    "assistant_name": name,
                    "system_prompt": system,
                },
            ))
    return samples


def detection_samples(trait: Trait, version: str = "eval") -> list[Sample]:
    """The held-out questions alone: no system prompt, the model's own default applies."""
    return [
        Sample(
            id=f"{trait.name}_{q}",
            input=question,
            metadata={
                "trait": trait.name,
                "version": version,
                "question_id": q,
                "instruction_id": None,
                "question": question,
                "instruction": None,
                "assistant_name": None,
                "system_prompt": None,
            },
        )
        for q, question in enumerate(trait.questions(version))
    ]


# --- tasks ----------------------------------------------------------------------------------------


@task
def persona_collect(
    trait: str | None = None,
    polarity: str = "pos",
    version: str = "extract",
    n_per_question: int = 10,
    temperature: float = 1.0,
    max_tokens: int = 1000,
    assistant_name: str | None = None,
    judge_mode: str = "auto",
    judge_min_mass: float = MIN_MASS,
    likelihood_pairs: int = LIKELIHOOD_PAIRS,
) -> Task:
    """Collect judged answers under the trait's pos or neg persona system prompts (the paper's step 2).

    Args:
        trait: A registered trait (`pv traits list`).
        polarity: `pos` (behave with the trait), `neg` (without it), or `both` (one log, metrics per polarity).
        version: `extract` (the questions used to find the vector) or `eval` (held out).
        n_per_question: Answers per question and instruction (inspect epochs; paper: 10).
        temperature: Sampling temperature (paper: 1.0).
        max_tokens: Longest answer (paper: 1000).
        assistant_name: The name in `You are a/an {name} assistant.` (default: the trait for pos,
            `helpful` for neg).
        judge_mode: `auto`, `logprob`, `continuation`, `text` (see pv_harness.scorers.judge) or `likelihood`
            (no judge prompt: a pv/ model's likelihood of the answer under the pos vs neg persona prompts; see
            pv_harness.scorers.likelihood).
        judge_min_mass: Unscored when the judge puts less probability than this on numbers (paper: 0.25;
            lower it only for a small local judge that rarely answers with a bare number).
        likelihood_pairs: With judge_mode=likelihood, the instruction pairs each answer is scored under: the
            first N, skipping the one that prompted the answer (0 = all).
    """
    definition = _trait(trait)
    _choice("polarity", polarity, (*POLARITIES, "both"))
    _choice("version", version, VERSIONS)
    if polarity == "both" and assistant_name:
        raise PrerequisiteError("assistant_name needs a single polarity (pos or neg), not both")
    epochs = _positive_int("n_per_question", n_per_question)
    max_tokens = _positive_int("max_tokens", max_tokens)
    temperature = _number("temperature", temperature)
    judge_mode = _judge_mode(judge_mode)
    _early_checks(judge_mode, steering=False)

    polarities = POLARITIES if polarity == "both" else (polarity,)
    samples = [s for p in polarities for s in collection_samples(definition, p, version, assistant_name)]
    return Task(
        dataset=MemoryDataset(samples, name=f"{definition.name}_{version}_{polarity}"),
        setup=preflight(judge_mode),
        solver=generate(),
        scorer=_scorers(definition.name, judge_mode, judge_min_mass, likelihood_pairs=likelihood_pairs),
        config=GenerateConfig(temperature=temperature, max_tokens=max_tokens),
        epochs=Epochs(epochs),
        metadata={"pv_task": "persona_collect", "trait": definition.name, "polarity": polarity,
                  "version": version, "n_per_question": epochs, "judge_mode": judge_mode},
    )


@task
def trait_eval(
    trait: str | None = None,
    n_per_question: int = 10,
    temperature: float = 1.0,
    max_tokens: int = 1000,
    version: str = "eval",
    judge_mode: str = "auto",
    steer_vector: str | None = None,
    steer_layer: int | None = None,
    steer_coef: float | None = None,
    steer_positions: str = "response",
    judge_min_mass: float = MIN_MASS,
    likelihood_pairs: int = LIKELIHOOD_PAIRS,
) -> Task:
    """Detection eval: how strongly a model shows a trait on the held-out questions, with no system prompt.

    Args:
        trait: A registered trait (`pv traits list`).
        n_per_question: Answers per question (inspect epochs).
        temperature: Sampling temperature.
        max_tokens: Longest answer.
        version: `eval` (held-out questions, default) or `extract`.
        judge_mode: `auto`, `logprob`, `continuation`, `text` or `likelihood` (see persona_collect).
        steer_vector: A persona vector file; with steer_layer and steer_coef, a pv/ model adds
            `coef * v[layer]` while generating.
        steer_layer: The layer whose vector is added (the vector file's layer convention).
        steer_coef: Steering coefficient (negative suppresses the trait).
        steer_positions: `response` (last prompt token and generated tokens), `all` or `prompt`.
        judge_min_mass: Unscored below this numeric probability mass (paper: 0.25; see persona_collect).
        likelihood_pairs: With judge_mode=likelihood, the first N instruction pairs to score under (0 = all).
    """
    definition = _trait(trait)
    _choice("version", version, VERSIONS)
    epochs = _positive_int("n_per_question", n_per_question)
    max_tokens = _positive_int("max_tokens", max_tokens)
    temperature = _number("temperature", temperature)
    judge_mode = _judge_mode(judge_mode)
    extra_body = steering_config(steer_vector, steer_layer, steer_coef, steer_positions)
    steering = extra_body is not None
    _early_checks(judge_mode, steering=steering)

    metadata: dict[str, Any] = {"pv_task": "trait_eval", "trait": definition.name, "version": version,
                                "n_per_question": epochs, "judge_mode": judge_mode}
    if extra_body is not None:
        metadata["steering"] = extra_body["pv"]["steer"]
    return Task(
        dataset=MemoryDataset(detection_samples(definition, version), name=f"{definition.name}_{version}"),
        setup=preflight(judge_mode, steering=steering),
        solver=generate(),
        scorer=_scorers(definition.name, judge_mode, judge_min_mass, likelihood_pairs=likelihood_pairs),
        config=GenerateConfig(temperature=temperature, max_tokens=max_tokens, extra_body=extra_body),
        epochs=Epochs(epochs),
        metadata=metadata,
    )


# The undecorated `trait_eval`: its Task carries no registry name, so each alias tags it with its own.
detection_task = inspect.unwrap(trait_eval)


def _detection_alias(trait_name: str) -> Any:
    """`pv_harness/<trait>_detection`: `trait_eval` with the trait fixed (the paper's detection tasks).

    Its parameters are `trait_eval`'s signature less `trait` and `version`, so the two cannot drift apart;
    inspect reads a task's parameters (`-T`) from that signature.
    """
    fixed = {"trait": trait_name, "version": "eval"}  # the held-out questions
    full = inspect.signature(trait_eval)
    signature = full.replace(parameters=[p for p in full.parameters.values() if p.name not in fixed])
    name = f"{trait_name}_detection"

    def alias(*args: Any, **kwargs: Any) -> Task:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as ex:
            raise TypeError(f"{name}() {ex}") from None
        return detection_task(**fixed, **bound.arguments)

    alias.__signature__ = signature  # type: ignore[attr-defined]
    alias.__annotations__ = {**{p.name: p.annotation for p in signature.parameters.values()},
                             "return": signature.return_annotation}
    alias.__name__ = alias.__qualname__ = name
    alias.__doc__ = f"`trait_eval` for the {trait_name} trait."
    return task(name=name)(alias)


evil_detection = _detection_alias("evil")
sycophantic_detection = _detection_alias("sycophantic")
hallucinating_detection = _detection_alias("hallucinating")
