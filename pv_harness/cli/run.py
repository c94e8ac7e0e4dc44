"""`pv run TRAIT`: collect, extract, sweep, monitor, report, in one resumable command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

if TYPE_CHECKING:
    from inspect_ai.util import DisplayType

from pv_harness.cli.fail import fail
from pv_harness.cli.options import number_list
from pv_harness.vectors.thresholds import (
    ABSOLUTE_FLOOR,
    DEFAULT_COHERENCE,
    DEFAULT_THRESHOLD,
    JUDGE_MODES,
    LIKELIHOOD_COHERENCE,
    RELATIVE_FLOOR,
)


def _model_args(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, Any]:
    from inspect_ai._util.config import parse_cli_args

    bad = [arg for arg in value if "=" not in arg or not arg.split("=", 1)[0]]
    if bad:
        raise click.BadParameter(f"give key=value (e.g. -M device=cuda -M dtype=bfloat16), got {bad[0]!r}")
    return parse_cli_args(value)


DISPLAY_TYPES = ("full", "conversation", "rich", "plain", "log", "none")  # inspect's DisplayType, without importing it


@click.command()
@click.argument("trait")
@click.option("--model", default="pv/smollm2", show_default=True, help="Subject model (a pv/ model: vectors "
              "need its activations).")
@click.option("--grader", default=None, help="Judge model (default: the subject model, judging by likelihood). The "
              "paper's judge is openai/gpt-4.1-mini-2025-04-14.")
@click.option("--n", "n", type=int, default=1, show_default=True, help="Answers per question and instruction.")
@click.option("--limit", type=int, default=0, show_default=True,
              help="Collection samples per polarity (question x instruction); 0 = all 100.")
@click.option("--max-tokens", type=int, default=48, show_default=True, help="Longest answer.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("pv-runs"),
              show_default=True,
              help="Where logs, vectors and pages go (a folder per trait and model).")
@click.option("--threshold", type=float, default=DEFAULT_THRESHOLD, show_default=True,
              help="Trait-score filter (see pv extract).")
@click.option("--coherence", type=float, default=None,
              help=f"Coherence filter (see pv extract). Default: {DEFAULT_COHERENCE:g} for a 0-100 judge, "
              f"{LIKELIHOOD_COHERENCE:g} for the likelihood judge (a geometric-mean token probability x 100).")
@click.option("--filter", "filter_mode", type=click.Choice(["paired", "independent"]), default="paired",
              show_default=True)
@click.option("--min-pairs", type=int, default=3, show_default=True)
@click.option("--holdout", type=float, default=0.2, show_default=True,
              help="Share of the extraction questions held out for the AUROCs.")
@click.option("--layers", callback=number_list(int), help="Sweep layers, e.g. 10,15,20 (default: three mid layers).")
@click.option("--coefs", callback=number_list(float), default="-2,0,1,2", show_default=True,
              help="Sweep coefficients (0 = the unsteered baseline; negative suppresses the trait).")
@click.option("--sweep-questions", type=int, default=10, show_default=True,
              help="Evaluation questions in the sweep.")
@click.option("--sweep-n", type=int, default=1, show_default=True, help="Answers per question and sweep setting.")
@click.option("--coherence-floor", type=float, default=None,
              help=f"The sweep's layer rule: steered settings must keep mean coherence >= this. Default: "
              f"{ABSOLUTE_FLOOR:g} for a 0-100 judge; {RELATIVE_FLOOR:g} x the unsteered baseline's coherence for the "
              "likelihood judge (then give a fraction).")
@click.option("--monitor-questions", type=int, default=None,
              help="Evaluation questions in the monitoring step (x pos, neg and no persona prompt; default: all).")
@click.option("--judge-mode", type=click.Choice(JUDGE_MODES), default=None,
              help="Default: likelihood when the grader is a pv/ model (the default), else auto.")
@click.option("--likelihood-pairs", type=int, default=None,
              help="Instruction pairs each answer is scored under in likelihood mode (0 = all; default: the judge's).")
@click.option("--judge-min-mass", type=float, default=0.25, show_default=True,
              help="A 0-100 judge's answer is unscored when it puts less probability than this on a bare number "
              "(the paper's rule).")
@click.option("--seed", type=int, default=None, help="Run seed: each sample gets its own seed from it "
              "(reproducible runs).")
@click.option("--extract-dtype", type=click.Choice(["float32", "bfloat16"]), default=None,
              help="Model dtype for extraction (default: float32, as the paper's vectors; generation: -M dtype).")
@click.option("-M", "model_args", multiple=True, callback=_model_args, metavar="KEY=VALUE",
              help="Model args for the pv/ model (repeatable), e.g. -M device=cuda -M dtype=bfloat16.")
@click.option("--display", type=click.Choice(DISPLAY_TYPES), default=None, help="inspect's display type.")
@click.option("--cache/--no-cache", default=False, show_default=True,
              help="Cache generations with inspect's cache policy (a rerun of the same requests reads them back).")
@click.option("--fresh", is_flag=True, help="Move the run folder aside (to FOLDER.old-TIMESTAMP) and start again; "
              "needed when the folder was made with other options.")
@click.option("--redo-changed", is_flag=True, help="When the folder was made with other options: redo only the "
              "first step they change and the steps after it (their old output moves to FOLDER.old-TIMESTAMP).")
def run(trait: str, model: str, grader: str | None, n: int, limit: int, max_tokens: int, out: Path, threshold: float,
        coherence: float | None, filter_mode: str, min_pairs: int, holdout: float, layers: list[int] | None,
        coefs: list[float], sweep_questions: int, sweep_n: int, coherence_floor: float | None,
        monitor_questions: int | None, judge_mode: str | None, likelihood_pairs: int | None, judge_min_mass: float,
        seed: int | None, extract_dtype: str | None, model_args: dict[str, Any], display: str | None, cache: bool,
        fresh: bool, redo_changed: bool) -> None:
    """Find and use the persona vector of TRAIT on a model, end to end (resumes if interrupted).

    Writes, under OUT/TRAIT-MODEL: report.html (what was found), results.json, sweep.csv, monitor.csv, the
    collection in the paper's CSV format, the vector file, a page per step and the inspect logs.
    """
    from pv_harness.pipeline import RunConfig, RunInterrupted
    from pv_harness.pipeline import run as run_pipeline
    from pv_harness.vectors.extraction import TooFewPairs

    cfg = RunConfig(trait=trait, model=model, grader=grader, n=n, limit=limit or None, max_tokens=max_tokens,
                    out=out, threshold=threshold, coherence=coherence, filter=filter_mode, min_pairs=min_pairs,
                    holdout=holdout, layers=layers, coefs=coefs, sweep_questions=sweep_questions, sweep_n=sweep_n,
                    coherence_floor=coherence_floor, monitor_questions=monitor_questions, judge_mode=judge_mode,
                    likelihood_pairs=likelihood_pairs, judge_min_mass=judge_min_mass, seed=seed,
                    extract_dtype=extract_dtype, model_args=model_args, display=cast("DisplayType | None", display),
                    cache=cache)
    try:
        result = run_pipeline(cfg, log=lambda msg: click.echo(msg, err=True), fresh=fresh,
                              redo_changed=redo_changed)
    except RunInterrupted as ex:
        fail(str(ex), 130)
    except KeyboardInterrupt:
        fail("interrupted before the first step started; run the same command again", 130)
    except TooFewPairs as ex:
        fail(str(ex), 2)
    except (ValueError, RuntimeError) as ex:
        fail(str(ex))
    click.echo(f"\nlogs:    {result.log_dir}\nvector:  {result.vector}\nlayer:   {result.layer_note}\n"
               f"results: {result.results}\nreport:  {result.report}\n"
               f"view the logs: inspect view --log-dir {result.log_dir}")
