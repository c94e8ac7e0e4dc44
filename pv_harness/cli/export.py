"""`pv export-csv`: the paper's CSV files from collection / detection logs."""

from __future__ import annotations

from pathlib import Path

import click

from pv_harness.cli.fail import fail
from pv_harness.logs import LogError
from pv_harness.reports.paper_csv import ExportError, export_csv


@click.command("export-csv")
@click.argument("logs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV file to write.")
@click.option("--tokenizer", default=None,
              help="Tokenizer folder (or cached hub id) whose chat template renders the `prompt` column "
                   "(default: the provider's logged prompt, else the log's hf/ or pv/ model).")
@click.option("--polarity", type=click.Choice(["pos", "neg"]), default=None,
              help="Only this polarity (for logs run with polarity=both).")
def export_csv_command(logs: tuple[Path, ...], out: Path, tokenizer: str | None, polarity: str | None) -> None:
    """Write LOGS as the paper's CSV: question, prompt, answer, question_id, <trait>, coherence.

    One row per answer; an unscored answer has an empty score cell (read as NaN), never 0.
    """
    try:
        summary = export_csv(list(logs), out, tokenizer=tokenizer, polarity=polarity,
                             warn=lambda m: click.secho(f"warning: {m}", fg="yellow", err=True))
    except (ExportError, LogError) as ex:
        fail(str(ex))
    click.echo(f"wrote {summary.rows} rows ({summary.trait}) to {out}; unscored: "
               f"{summary.unscored_trait} {summary.trait}, {summary.unscored_coherence} coherence")
