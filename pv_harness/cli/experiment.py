"""`pv experiment train|status|evaluate|results CONFIG`: model organisms from a YAML config."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    from inspect_ai.util import DisplayType

    from pv_harness.organisms.experiment import Experiment

T = TypeVar("T")

OUT = click.option("--out", type=click.Path(file_okay=False), default=None,
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
    """Build datasets (collecting answers first if configured) and train every model."""
    exp = _experiment(config, out, display)
    actions = _guard(lambda: exp.train(wait=not no_wait))
    for name, action in actions.items():
        click.echo(f"{name}: {action}")
    _print_status(exp, refresh=False)


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
    """Trait x strength table, eval_results.json and a tabbed plotly page (with shift, when configured)."""
    import pandas as pd

    exp = _experiment(config, out)
    res = _guard(exp.results)
    with pd.option_context("display.float_format", "{:.1f}".format, "display.width", 160):
        click.echo("mean trait score (rows: trained trait / strength; columns: detection task)")
        click.echo(res["table"].to_string())
    for trait, c in res["data"]["shift_correlation"].items():
        r = "n/a" if c["pearson"] is None else f"{c['pearson']:.3f}"
        low, high = c.get("pearson_ci") or (None, None)
        r += "" if low is None else f" (95% CI {low:+.2f} to {high:+.2f})"
        r += " (too few models for an interval)" if low is None and c["models"] < 4 else ""
        frac = c["null_fraction_as_large"]
        click.echo(f"shift vs {trait} score: r = {r} over {c['models']} models"
                   + ("" if frac is None else f"; random directions as large: {frac:.0%}"))
    click.echo(f"results: {res['json']}")
    click.echo(f"plots:   {res['html']}")
