"""Checks that run before a sample generates anything: a judge can work, steering has a pv/ model.

Tasks also run these checks while inspect builds them (inside `inspect eval`, where the model and
model roles are known), so a missing judge fails before the first sample starts. A task built
in Python before `eval()` is called cannot see its roles yet: then the same check runs as the
task's setup solver, still before any generation.
"""

from __future__ import annotations

import logging
from typing import Any

from inspect_ai._util.error import PrerequisiteError
from inspect_ai.model import Model, get_model, model_roles
from inspect_ai.solver import Generate, Solver, TaskState, solver
from pv_harness.scorers.judge import (
    GRADER_ROLE,
    LIKELIHOOD,
    JudgeConfigError,
    check_mode,
    is_pv_model,
    judge_note,
    likelihood_model,
    missing_grader_message,
)

logger = logging.getLogger(__name__)
_warned: set[str] = set()


def eval_context_model() -> Model | None:
    """The model being evaluated when called while inspect builds tasks (None outside an eval)."""
    from inspect_ai.model._model import active_model

    return active_model()


def check_grader(judge_mode: str, role: str = GRADER_ROLE) -> None:
    """Raise a PrerequisiteError unless the judge can work: the grader role is bound and can judge in
    `judge_mode`, or, for the likelihood judge, a pv/ model (grader or evaluated model) is there to score with."""
    try:
        if judge_mode == LIKELIHOOD:
            judge = likelihood_model(role)
        else:
            roles: dict[str, Any] = model_roles()
            if role not in roles:
                raise PrerequisiteError(missing_grader_message(role))
            judge = get_model(role=role)
            check_mode(judge_mode, judge)
    except JudgeConfigError as ex:
        raise PrerequisiteError(str(ex)) from ex
    note = judge_note(judge, judge_mode)
    if note is not None and note not in _warned:  # once per judge and kind of note
        _warned.add(note)
        logger.warning(note)


def check_steering(model: Model) -> None:
    if not is_pv_model(model):
        raise PrerequisiteError(
            f"steering options need a pv/ model (our local provider applies the vector); the model is "
            f"{str(model)!r}. Run with --model pv/<model>."
        )


@solver
def preflight(judge_mode: str = "auto", steering: bool = False, grader_role: str = GRADER_ROLE) -> Solver:
    """Fail the sample before generation when the judge or steering cannot work."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        check_grader(judge_mode, grader_role)
        if steering:
            check_steering(get_model())
        return state

    return solve
