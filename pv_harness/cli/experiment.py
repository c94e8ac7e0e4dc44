"""`pv experiment train|status|evaluate|results CONFIG`: model organisms from a YAML config."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    from inspect_ai.util import DisplayType

    from pv_harness.organisms.experiment import Experiment

T = TypeVar("T")

OUT = click.option("-o", "--out", type=click.Path(file_okay=False), default=None,
                   help="Output folder (default: the config's `out`, else pv-experiments/<name>).")
DISPLAY = click.option("--display", type=click.Choice(["full", "conversation", "rich", "plain", "log", "none"]),
                       default=None, help="inspect's display (default: inspect's own).")
CONFIG = click.argument("config", type=click.Path(exists=True, dir_okay=False))


def _experiment(config: str, out: str | None, display: DisplayType | None = None) -> Experiment:
    from pv_harness.organisms.experiment import Experiment, ExperimentError

    try:
        return Experiment(config, out=out, display=display, log=lambda m: click.echo(m, err=True))
    except ExperimentError as ex:
        raise click.ClickException(str(ex)) from ex


def _guard(fn: Callable[[], T]) -> T:
    from pv_harness.organisms.experiment import ExperimentError
    from pv_harness.organisms.training import TrainingError

    try:
        return fn()
    except (ExperimentError, TrainingError) as ex:
        raise click.ClickException(str(ex)) from ex


@click.group("experiment")
def experiment() -> None:
    """Train trait x strength model organisms and run every detection eval on every model.

    Steps are cached by a content hash of their config and inputs (OUT/state.json): rerunning a step
    redoes nothing; failed or cancelled training jobs are retried, never reused.
    """


@experiment.command("train")
@CONFIG
@OUT
@DISPLAY
@click.option("--no-wait", is_flag=True, help="Submit jobs and return (remote backends); check with `status`.")
def train_command(config: str, out: str | None, display: DisplayType | None, no_wait: bool) -> None:
    """Build datasets (collecting answers first if configured) and train every model.

    Exits 1 when a job failed (after every other job ran), with one line per failed job and its log."""
    exp = _experiment(config, out, display)
    actions = _guard(lambda: exp.train(wait=not no_wait))
    for name, action in actions.items():
        click.echo(f"{name}: {action}")
    _print_status(exp, refresh=False)
    failures = exp.failures()
    for line in failures:
        click.secho(f"error: {line}", fg="red", err=True)
    if failures:
        raise SystemExit(1)


def _print_status(exp: Experiment, refresh: bool = True) -> None:
    import pandas as pd

    rows = _guard(lambda: exp.status(refresh=refresh))
    frame = pd.DataFrame(rows).set_index("name")
    if not frame["error"].astype(bool).any():
        frame = frame.drop(columns="error")
    click.echo(frame.to_string())


@experiment.command("status")
@CONFIG
@OUT
def status_command(config: str, out: str | None) -> None:
    """Each model's training state, job id and model id."""
    _print_status(_experiment(config, out))


@experiment.command("evaluate")
@CONFIG
@OUT
@DISPLAY
def evaluate_command(config: str, out: str | None, display: DisplayType | None) -> None:
    """Every trained model x every detection task in one resumable inspect eval_set."""
    exp = _experiment(config, out, display)
    log_dir = _guard(exp.evaluate)
    click.echo(f"logs: {log_dir}  (inspect view --log-dir {log_dir})")


@experiment.command("results")
@CONFIG
@OUT
def results_command(config: str, out: str | None) -> None:
    """Per model x task: mean trait score, n and 95% interval; each strength against baseline; the shift
    correlation (when configured); eval_results.json and a tabbed plotly page that says the same."""
    import pandas as pd

    from pv_harness.reports.organisms import correlation_text, difference_text

    exp = _experiment(config, out)
    res = _guard(exp.results)
    data = res["data"]
    for note in data["notes"]:
        click.echo(f"note: {note}")
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        click.echo("mean trait score per model (rows) and detection task (columns), 95% t interval")
        click.echo(res["table"].to_string())
    for d in data["versus_baseline"]:
        click.echo(difference_text(d))
    for trait, c in data["shift_correlation"].items():
        click.echo(correlation_text(trait, c))
    click.echo(f"results: {res['json']}")
    click.echo(f"plots:   {res['html']}")
