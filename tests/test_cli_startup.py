"""`pv --help` stays fast: the command line loads neither torch nor transformers until a command runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "transformers")

# runs in a fresh interpreter: import the command line, then ask every command and subcommand for --help
PROBE = """
import json, sys

import click

from pv_harness.cli import main

HEAVY = {heavy!r}
after_import = [m for m in HEAVY if m in sys.modules]


def paths(group, prefix):
    for name, command in sorted(group.commands.items()):
        yield [*prefix, name]
        if isinstance(command, click.Group):
            yield from paths(command, [*prefix, name])


codes = {{}}
for path in [[], *paths(main, [])]:
    try:
        main([*path, "--help"], prog_name="pv")
    except SystemExit as ex:
        codes[" ".join(path)] = ex.code
print(json.dumps({{"after_import": after_import, "after_help": [m for m in HEAVY if m in sys.modules],
                  "codes": codes}}))
"""


def test_the_command_line_imports_no_torch_or_transformers() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY)], capture_output=True, text=True,
                         check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["after_import"] == []
    assert report["after_help"] == []
    assert {"", "extract", "run", "traits", "traits list", "vectors"} <= set(report["codes"])
    assert set(report["codes"].values()) == {0}


def test_pv_help_works() -> None:
    pv = Path(sys.executable).with_name("pv")  # the console script installed beside this interpreter
    out = subprocess.run([str(pv), "--help"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("Usage: pv [OPTIONS] COMMAND [ARGS]...")
    assert "extract" in out.stdout
