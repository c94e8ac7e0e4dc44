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
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="HTML page (default: beside the log).")
@click.option("--floor", type=float, default=75.0, show_default=True,
              help="Minimum mean coherence for a setting to count when picking the layer.")
def sweep(log: str, out: Path | None, floor: float) -> None:
    """Plot a steering_sweep log and pick the layer (written to <vector>.layer.json)."""
    from pv_harness.reports.sweep import write_sweep_report

    try:
        page, choice, choice_path = write_sweep_report(log, out, floor=floor)
    except (ValueError, FileNotFoundError) as ex:
        fail(str(ex))
    if choice:
        click.echo(f"layer {choice.layer} (coef {choice.coef:g}): trait {choice.trait_mean:.1f}, "
                   f"coherence {choice.coherence_mean:.1f}" + (f" -> {choice_path}" if choice_path else ""))
    else:
        click.echo(f"no steered setting kept mean coherence >= {floor:g}; no layer chosen")
    click.echo(str(page))


@report.command()
@click.argument("log")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="HTML page (default: beside the log).")
def monitor(log: str, out: Path | None) -> None:
    """Token heatmaps and per-sample projections vs judge scores from a log with pv_monitor data."""
    from pv_harness.reports.monitor import write_monitor_report

    try:
        click.echo(str(write_monitor_report(log, out)))
    except (ValueError, FileNotFoundError) as ex:
        fail(str(ex))
