"""`pv run TRAIT`: collect, extract, sweep, monitor, report, in one resumable command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from pv_harness.cli.fail import fail
from pv_harness.vectors.thresholds import DEFAULT_COHERENCE, DEFAULT_THRESHOLD


def _numbers(cast: Callable[[str], float]) -> Callable[[click.Context, click.Parameter, str | None], list | None]:
    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> list | None:
        if value is None:
            return None
        try:
            return [cast(x) for x in value.split(",") if x.strip()]
        except ValueError as ex:
            raise click.BadParameter(f"a comma-separated list of numbers, got {value!r}") from ex

    return parse


@click.command()
@click.argument("trait")
@click.option("--model", default="pv/smollm2", show_default=True, help="Subject model (a pv/ model: vectors "
              "need its activations).")
@click.option("--grader", default=None, help="Judge model (default: the subject model). The paper's judge is "
              "openai/gpt-4.1-mini-2025-04-14.")
@click.option("--n", "n", type=int, default=1, show_default=True, help="Answers per question and instruction.")
@click.option("--limit", type=int, default=10, show_default=True,
              help="Collection samples per polarity (question x instruction); 0 = all 100.")
@click.option("--max-tokens", type=int, default=64, show_default=True, help="Longest answer.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("pv-runs"), show_default=True,
              help="Where logs, vectors and pages go (a folder per trait and model).")
@click.option("--threshold", type=float, default=DEFAULT_THRESHOLD, show_default=True,
              help="Trait-score filter (see pv extract).")
@click.option("--coherence", type=float, default=DEFAULT_COHERENCE, show_default=True,
              help="Coherence filter (see pv extract).")
@click.option("--filter", "filter_mode", type=click.Choice(["paired", "independent"]), default="paired",
              show_default=True)
@click.option("--min-pairs", type=int, default=3, show_default=True)
@click.option("--layers", callback=_numbers(int), help="Sweep layers, e.g. 10,15,20 (default: three mid layers).")
@click.option("--coefs", callback=_numbers(float), default="0,2,4", show_default=True, help="Sweep coefficients.")
@click.option("--sweep-questions", type=int, default=3, show_default=True)
@click.option("--judge-mode", type=click.Choice(["auto", "logprob", "continuation", "text"]), default="auto",
              show_default=True)
@click.option("--judge-min-mass", type=float, default=0.25, show_default=True,
              help="Unscored when the judge puts less probability than this on a bare number (the paper's rule). "
              "The embedded SmolLM2 judge rarely does: `make demo` passes 0.")
@click.option("--seed", type=int, default=None, help="Sampling seed (reproducible runs).")
def run(trait: str, model: str, grader: str | None, n: int, limit: int, max_tokens: int, out: Path, threshold: float,
        coherence: float, filter_mode: str, min_pairs: int, layers: list[int] | None, coefs: list[float],
        sweep_questions: int, judge_mode: str, judge_min_mass: float, seed: int | None) -> None:
    """Find and use the persona vector of TRAIT on a model, end to end (resumes if interrupted)."""
    from pv_harness.pipeline import RunConfig
    from pv_harness.pipeline import run as run_pipeline
    from pv_harness.vectors.extraction import TooFewPairs

    cfg = RunConfig(trait=trait, model=model, grader=grader, n=n, limit=limit or None, max_tokens=max_tokens,
                    out=out, threshold=threshold, coherence=coherence, filter=filter_mode, min_pairs=min_pairs,
                    layers=layers, coefs=coefs, sweep_questions=sweep_questions, judge_mode=judge_mode,
                    judge_min_mass=judge_min_mass, seed=seed)
    try:
        result = run_pipeline(cfg, log=lambda msg: click.echo(msg, err=True))
    except TooFewPairs as ex:
        fail(str(ex), 2)
    except (ValueError, RuntimeError) as ex:
        fail(str(ex))
    click.echo(f"\nlogs:    {result.log_dir}\nvector:  {result.vector}\nlayer:   {result.layer_note}\n"
               f"report:  {result.report}\nview the logs: inspect view --log-dir {result.log_dir}")
