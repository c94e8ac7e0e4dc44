"""`pv traits`: list, show, validate and export trait definitions (`new` and `import`, which write plugin
packages, are attached from `pv_harness.cli.trait_new`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pv_harness import plugin_manager as registry
from pv_harness.cli.fail import fail
from pv_harness.traits.model import TraitCheck, TraitError, check_path


def _trait(name: str):  # noqa: ANN202 - click helper
    try:
        return registry.get_trait(name)
    except TraitError as ex:
        fail(str(ex))


@click.group()
def traits() -> None:
    """Trait definitions: list, show, validate, export, and make plugins of them (new, import)."""


STRICT = click.option("--strict", is_flag=True,
                      help="Fail on warnings too (question counts other than the paper's 20 + 20, say).")


def report_check(check: TraitCheck, path: Path, *, strict: bool = False) -> bool:
    """Print what checking `path` found, every problem on its own line; True when it failed."""
    for note in check.notes:
        click.echo(note, err=True)
    for trait in check.traits:
        click.echo(f"ok  {trait.name}  ({path})")
    for warning in check.warnings:
        click.secho(f"warning  {warning}", fg="yellow", err=True)
    for error in check.errors:
        click.secho(f"invalid  {error}", fg="red", err=True)
    if not check.traits and not check.errors:
        click.secho(f"invalid  {path}: no trait files found", fg="red", err=True)
        return True
    return bool(check.errors) or (strict and bool(check.warnings))


@traits.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_traits(as_json: bool) -> None:
    """List every registered trait with the plugin that provides it."""
    known = registry.traits()
    if as_json:
        click.echo(json.dumps([{"name": n, "plugin": registry.trait_plugin(n), "description": t.description}
                               for n, t in known.items()], indent=2))
    else:
        for name, trait in known.items():
            click.echo(f"{name:<20} {registry.trait_plugin(name):<20} {trait.description[:70]}")
    for problem in registry.plugin_warnings() + registry.plugin_errors():
        click.secho(f"warning: {problem}", fg="yellow", err=True)


@traits.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the whole definition as JSON.")
def show(name: str, as_json: bool) -> None:
    """Show one trait: instructions, question counts and judge prompt."""
    trait = _trait(name)
    if as_json:
        click.echo(trait.model_dump_json(indent=2))
        return
    click.secho(f"{trait.name}  (plugin: {registry.trait_plugin(name)})", bold=True)
    click.echo(trait.description)
    click.echo(f"\nassistant names: pos={trait.assistant_name('pos')!r}  neg={trait.assistant_name('neg')!r}")
    click.echo(f"questions: {len(trait.extraction_questions)} extraction, "
               f"{len(trait.evaluation_questions)} evaluation")
    for i, pair in enumerate(trait.instructions):
        click.echo(f"\n[{i}] pos: {pair.pos}\n    neg: {pair.neg}")
    click.echo("\nfirst extraction questions:")
    for question in trait.extraction_questions[:3]:
        click.echo(f"  - {question}")
    click.echo(f"\njudge prompt:\n{trait.judge_prompt}")


@traits.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@STRICT
def validate(paths: tuple[Path, ...], strict: bool) -> None:
    """Check trait files and list every problem of every file (exit 1 if any): our JSON (a file or a
    folder of them), a paper-format folder, or a trait_data_extract/*.json file."""
    failed = [report_check(check_path(path), path, strict=strict) for path in paths]
    if any(failed):
        sys.exit(1)


@traits.command("export")
@click.argument("name")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write in (the DIRECTORY argument, the older spelling, still works).")
@click.option("--force", is_flag=True, help="Overwrite files that are already there.")
def export(name: str, directory: Path | None, out: Path | None, force: bool) -> None:
    """Write a trait in the paper's format: OUT/trait_data_{extract,eval}/NAME.json."""
    if directory is not None and out is not None and directory != out:
        raise click.UsageError("give the folder once: -o/--out (or the older DIRECTORY argument)")
    directory = out or directory
    if directory is None:
        raise click.UsageError("give the folder to write in with -o/--out")
    trait = _trait(name)
    existing = [str(path) for path in trait.paper_paths(directory) if path.exists()]
    if existing and not force:
        fail(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: pass --force to overwrite")
    for path in trait.export_paper(directory):
        click.echo(str(path))
