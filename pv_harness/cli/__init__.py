"""The `pv` command line. Each command group lives in its own module and is attached here."""

from __future__ import annotations

from typing import Any

import click

from pv_harness import __version__
from pv_harness.cli.experiment import experiment
from pv_harness.cli.export import export_csv_command
from pv_harness.cli.extract import extract
from pv_harness.cli.fail import fail
from pv_harness.cli.model import model
from pv_harness.cli.monitor import monitor
from pv_harness.cli.plugins import plugins
from pv_harness.cli.report import report
from pv_harness.cli.run import run
from pv_harness.cli.shift import screen_command, shift_command
from pv_harness.cli.trait_new import trait  # importing it adds `new` and `import` to `pv traits`
from pv_harness.cli.traits import traits
from pv_harness.cli.vectors import vectors
from pv_harness.errors import PvError


class _Main(click.Group):
    """The `pv` group: an error pv-harness raises on purpose reaches the user as one `error:` line and exit 1,
    from every command, never as a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PvError as ex:
            fail(str(ex))


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pv")
def main() -> None:
    """pv-harness: persona vectors on inspect-ai.

    Find the direction in a model's activations that carries a character trait, then monitor,
    steer and predict that trait. Tasks run with `inspect eval pv_harness/<task>`; this command
    manages traits, plugins, models and the pipeline around them.
    """


main.add_command(plugins)
main.add_command(traits)
main.add_command(model)
main.add_command(trait)  # hidden: the older name of `pv traits`
main.add_command(export_csv_command)
main.add_command(extract)
main.add_command(vectors)
main.add_command(report)
main.add_command(run)
main.add_command(shift_command)
main.add_command(screen_command)
main.add_command(experiment)
main.add_command(monitor)
