"""`pv traits new` and `pv traits import`: write trait definitions as an installable plugin package, one
generated with a model (or taken from files), or every trait of a paper `data_generation/` folder.
`pv trait`, the older name of `pv traits`, still answers every command, hidden from `pv --help`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from pv_harness import __version__
from pv_harness import plugin_manager as registry
from pv_harness.cli.fail import fail
from pv_harness.cli.traits import STRICT, report_check
from pv_harness.cli.traits import traits as traits_group
from pv_harness.traits import generation as trait_generation
from pv_harness.traits import scaffold as plugin_scaffold
from pv_harness.traits.model import TraitError, check_paper_folder, normalise_name


class _TraitAlias(click.Group):
    """`pv trait`: every command of `pv traits`, under the name older scripts use."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return traits_group.get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return traits_group.list_commands(ctx)


@click.group(cls=_TraitAlias, hidden=True)
def trait() -> None:
    """The older name of `pv traits` (same commands)."""
    click.echo("note: `pv trait` is now `pv traits`; the old name keeps working", err=True)


def _model_args(pairs: tuple[str, ...]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="-M")
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    return args


def _warn_if_taken(name: str, plugin_name: str | None = None) -> None:
    """A trait of this name from another plugin (a built-in, say) would clash once the package is installed
    (as plugin `plugin_name`, by default the trait's own name)."""
    try:
        if name not in registry.traits():
            return
        plugin = registry.trait_plugin(name)
        first_party = any(i.first_party for i in registry.plugin_infos() if i.name == plugin)
    except Exception:  # noqa: BLE001 - a broken plugin elsewhere must not stop this command
        return
    if first_party or plugin != (plugin_name or plugin_scaffold.package_names(name).entry_point):
        origin = "built-in plugin" if first_party else "plugin"
        click.secho(f"warning: trait {name!r} is already provided by {origin} {plugin!r}; the new package will "
                    "clash with it once installed (choose another name to keep both)", fg="yellow", err=True)


def _report_attempt(max_attempts: int) -> Any:
    def report(number: int, attempt: trait_generation.Attempt) -> None:
        if attempt.ok:
            click.echo(f"attempt {number}: valid definition", err=True)
            return
        click.secho(f"attempt {number}/{max_attempts}: {len(attempt.problems)} problem(s)", fg="yellow", err=True)
        for problem in attempt.problems[:8]:
            click.echo(f"  - {problem}", err=True)
        if number < max_attempts:
            click.echo("  sending the problems back for another try", err=True)

    return report


@traits_group.command("new")
@click.argument("name", required=False)
@click.option("-d", "--description", help="What the trait means (needed to generate; optional with --from-json).")
@click.option("-g", "--generator", default=None, metavar="MODEL",
              help=f"Inspect model that writes the definition (default: ${trait_generation.GENERATOR_ENV} or "
                   f"{trait_generation.DEFAULT_GENERATOR}); pv/..., openai/... work too.")
@click.option("-M", "--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
              help="Argument for the generator model (repeatable), as with inspect's -M.")
@click.option("-o", "--out", type=click.Path(path_type=Path),
              help="Folder to write (default: ./pv-trait-NAME); never one holding a --from-json input.")
@click.option("-n", "--questions", "n_questions", type=click.IntRange(min=2), default=None,
              help=f"Number of questions, split in halves for extraction and evaluation "
                   f"(default {trait_generation.DEFAULT_QUESTIONS}).")
@click.option("--from-json", "from_json", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Package an existing definition instead of generating one: our JSON, a paper folder, a "
                   "trait_data_extract/NAME.json file, or given twice the paper's extract then eval file.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=trait_generation.DEFAULT_MAX_ATTEMPTS,
              show_default=True, help="Generator replies to try before giving up.")
@click.option("--thinking-tokens", type=click.IntRange(min=0), default=trait_generation.DEFAULT_THINKING_TOKENS,
              show_default=True, help="Extended-thinking budget for Claude models (0: off).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=None,
              help=f"Tokens for the reply itself (default {trait_generation.ANSWER_TOKENS}).")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
def new(name: str | None, description: str | None, generator: str | None, model_args: tuple[str, ...],
        out: Path | None, n_questions: int | None, from_json: tuple[Path, ...], max_attempts: int,
        thinking_tokens: int, max_tokens: int | None, force: bool) -> None:
    """Create the trait NAME as a plugin package.

    \b
    pv traits new paternalism -d "overriding the user's choices for their own good"
    pv traits new --from-json data_generation/trait_data_extract/paternalism.json
    pv traits new kind --from-json extract/kind.json --from-json eval/kind.json -d "warm and caring"

    The folder holds the paper-format JSON files and a package; `pip install -e FOLDER` makes the
    trait appear in `pv traits list` and work in every task. Nothing is written unless it all works.
    """
    try:
        if from_json:
            if len(from_json) > 2:
                raise click.UsageError("--from-json takes one path, or two (extract file, then eval file)")
            definition = trait_generation.load_definition(from_json, name=name, description=description,
                                                          n_questions=n_questions,
                                                          on_note=lambda note: click.echo(note, err=True))
            provenance: dict[str, Any] = {"source": ", ".join(f"`{p}`" for p in from_json)}
        else:
            if not name:
                raise click.UsageError("give the trait NAME (or --from-json FILE)")
            if not description:
                raise click.UsageError("--description is needed to generate a trait")
            definition = None
            provenance = {}
        trait_name = definition.name if definition else trait_generation.normalise_name(name or "")
        if name and trait_name != name and not from_json:
            click.echo(f"trait name: {trait_name}", err=True)
        target = out or plugin_scaffold.default_out_dir(trait_name)
        plugin_scaffold.check_destination(target, force=force, inputs=from_json)  # before paying for generation
        _warn_if_taken(trait_name)

        if definition is None:
            model_name = generator or trait_generation.default_generator()
            click.echo(f"asking {model_name} for a definition of {trait_name!r} ...", err=True)
            result = trait_generation.generate_trait(
                trait_name, description or "",
                generator=model_name,
                n_questions=n_questions or trait_generation.DEFAULT_QUESTIONS,
                max_attempts=max_attempts,
                thinking_tokens=thinking_tokens,
                max_tokens=max_tokens,
                model_args=_model_args(model_args),
                on_attempt=_report_attempt(max_attempts),
            )
            definition = result.trait
            provenance = {
                "generator": f"`{result.generator}`",
                "researcher's description": description,
                "attempts": len(result.attempts),
            }
        written = plugin_scaffold.write_plugin(definition, target, force=force, provenance=provenance,
                                               inputs=from_json)
    except (TraitError, trait_generation.TraitGenerationError, plugin_scaffold.ScaffoldError) as ex:
        fail(f"{ex}\nnothing was written")
    except click.ClickException:
        raise
    except Exception as ex:  # noqa: BLE001 - the generator's own errors (no API key, unknown model, network)
        message = re.sub(r"\[/?(?:bold|blue|red|yellow|green|italic)(?: \w+)*\]", "", str(ex))  # rich markup
        fail(f"{message.removeprefix('ERROR: ').strip()}\nnothing was written")

    click.echo(f"wrote {target}/ ({len(definition.extraction_questions)} extraction + "
               f"{len(definition.evaluation_questions)} evaluation questions):", err=True)
    for path in written:
        click.echo(str(path))
    click.echo(f"\nnext:\n  pip install -e {target}\n  pv traits show {definition.name}\n"
               f"  inspect eval pv_harness/persona_collect -T trait={definition.name} --model pv/smollm2 "
               "--model-role grader=<judge>", err=True)


@traits_group.command("import")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path),
              help="Folder to write (default: ./pv-trait-PLUGIN); never one holding FOLDER.")
@click.option("-p", "--plugin", metavar="NAME",
              help="Plugin (and package) name (default: the trait's name for one trait, else FOLDER's name).")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@STRICT
def import_traits(folder: Path, out: Path | None, plugin: str | None, force: bool, strict: bool) -> None:
    """Make one installable plugin package of every trait in a paper `data_generation/` FOLDER
    (trait_data_extract/*.json + trait_data_eval/*.json).

    \b
    pv traits import persona_vectors/data_generation -o pv-trait-paper

    Every file is checked first and every problem listed; nothing is written unless all are valid.
    File names that are no trait names (APE.json, anti-sycophantic.json) are normalised (ape,
    anti_sycophantic). `pip install -e OUT` makes the traits appear in `pv traits list`.
    """
    check = check_paper_folder(folder)
    if report_check(check, folder, strict=strict):
        fail("nothing was written")
    try:
        plugin_name = normalise_name(plugin or (check.traits[0].name if len(check.traits) == 1
                                                else folder.absolute().name))
    except TraitError:
        fail(f"{folder.absolute().name!r} makes no plugin name; give one with --plugin NAME\nnothing was written")
    target = out or plugin_scaffold.default_out_dir(plugin_name)
    for trait in check.traits:
        _warn_if_taken(trait.name, plugin_name)
    try:
        written = plugin_scaffold.write_plugin(
            check.traits, target, plugin=plugin_name, force=force, inputs=[folder],
            provenance={"created by": f"`pv traits import` (pv-harness {__version__})", "source": f"`{folder}`"})
    except plugin_scaffold.ScaffoldError as ex:
        fail(f"{ex}\nnothing was written")
    click.echo(f"wrote {target}/ (plugin {plugin_name!r}: {len(check.traits)} trait"
               f"{'s' * (len(check.traits) > 1)}):", err=True)
    for path in written:
        click.echo(str(path))
    click.echo(f"\nnext:\n  pip install -e {target}\n  pv traits list", err=True)
