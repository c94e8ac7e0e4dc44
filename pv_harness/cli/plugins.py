"""`pv plugins`: what is installed, every load or registration error, and names `PV_HARNESS_PLUGINS` got wrong."""

from __future__ import annotations

import json

import click

from pv_harness import plugin_manager as registry


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--all", "show_all", is_flag=True, help="Include the first-party (built-in) plugins.")
def plugins(as_json: bool, show_all: bool) -> None:
    """List installed plugins (name, version, hooks), then every plugin that failed to load or register."""
    infos = [i for i in registry.plugin_infos() if show_all or not i.first_party]
    errors = registry.plugin_errors()
    warnings = registry.plugin_warnings()
    if as_json:
        click.echo(json.dumps({
            "plugins": [{"name": i.name, "version": i.version, "hooks": i.hooks, "first_party": i.first_party}
                        for i in infos],
            "errors": [{"plugin": e.plugin, "reason": e.reason} for e in errors],
            "warnings": [{"plugin": w.plugin, "reason": w.reason} for w in warnings],
        }, indent=2))
        return
    if not infos:
        click.echo("No third-party plugins installed (use --all to include the built-in ones).")
    for info in infos:
        origin = "built-in" if info.first_party else (info.version or "?")
        click.echo(f"{info.name:<24} {origin:<10} {', '.join(info.hooks)}")
    for warning in warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    for error in errors:
        click.secho(f"error: {error}", fg="red", err=True)
