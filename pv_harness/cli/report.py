"""`pv report`: pages from eval logs (steering sweeps, token monitors)."""

from __future__ import annotations

from pathlib import Path

import click

from pv_harness.cli.fail import fail


@click.group()
def report() -> None:
    """Turn eval logs into HTML pages."""


@report.command()
@click.argument("log")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="HTML page (default: beside the log).")
@click.option("--floor", type=float, default=None,
              help="Minimum mean coherence for a setting to count when picking the layer (default: 75, or 0.5 "
              "with --relative).")
@click.option("--relative", is_flag=True, help="The floor is a fraction of the unsteered baseline's mean coherence "
              "(for the likelihood judge, whose coherence is not on the paper's scale).")
def sweep(log: str, out: Path | None, floor: float | None, relative: bool) -> None:
    """Plot a steering_sweep log and pick the layer (written to <vector>.layer.json)."""
    from pv_harness.reports.sweep import summarise, sweep_frame, why_none, write_sweep_report
    from pv_harness.vectors.thresholds import ABSOLUTE_FLOOR, RELATIVE_FLOOR

    floor = floor if floor is not None else RELATIVE_FLOOR if relative else ABSOLUTE_FLOOR
    try:
        page, choice, choice_path = write_sweep_report(log, out, floor=floor, relative=relative)
    except (ValueError, FileNotFoundError) as ex:
        fail(str(ex))
    if choice:
        click.echo(f"layer {choice.layer} (coef {choice.coef:g}): trait {choice.trait_mean:.1f}, "
                   f"coherence {choice.coherence_mean:.1f}" + (f" -> {choice_path}" if choice_path else ""))
    else:
        click.echo(f"no layer chosen: {why_none(summarise(sweep_frame(log)[0]), floor, relative)}")
    click.echo(str(page))


@report.command()
@click.argument("log")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="HTML page (default: beside the log).")
def monitor(log: str, out: Path | None) -> None:
    """Token heatmaps and per-sample projections vs judge scores from a log with pv_monitor data."""
    from pv_harness.reports.monitor import write_monitor_report

    try:
        click.echo(str(write_monitor_report(log, out)))
    except (ValueError, FileNotFoundError) as ex:
        fail(str(ex))
