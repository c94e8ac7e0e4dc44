"""Write traits as a pip-installable pv-harness plugin package, all at once or not at all.

Layout of the folder (`pv-trait-<plugin>/` by default; the plugin is named after its one trait, or
chosen when it holds several, as `pv traits import` writes):

    pyproject.toml                          the `pv_harness` entry point and package data
    README.md                               what the traits are, how to install and run them
    pv_trait_<plugin>/__init__.py           the plugin: registers each trait from its JSON
    pv_trait_<plugin>/<name>.json           each definition in our format (the source of truth)
    trait_data_extract/<name>.json          the paper's files, for the paper's own scripts
    trait_data_eval/<name>.json

Everything is written into a temporary folder beside the destination and renamed into place,
so a failure (or Ctrl-C) leaves either the complete package or nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv_harness import __version__
from pv_harness.atomic import atomic_write_json
from pv_harness.errors import PvError
from pv_harness.traits.model import Trait


class ScaffoldError(RuntimeError, PvError):
    """The destination cannot take the package (it exists, is not a folder, or holds an input)."""


@dataclass(frozen=True)
class PackageNames:
    distribution: str  # pv-trait-power-seeking
    module: str  # pv_trait_power_seeking
    entry_point: str  # power_seeking (the plugin's name in `pv plugins` and PV_HARNESS_PLUGINS)


def package_names(plugin: str) -> PackageNames:
    """The names of the package for plugin `plugin` (a slug: the trait's name for a one-trait package)."""
    return PackageNames(
        distribution=f"pv-trait-{plugin.replace('_', '-')}",
        module=f"pv_trait_{plugin}",
        entry_point=plugin,
    )


def default_out_dir(plugin: str) -> Path:
    return Path(f"pv-trait-{plugin.replace('_', '-')}")


def check_destination(out: Path, *, force: bool = False, inputs: Sequence[Path] = ()) -> None:
    """Fail before any work is done when `out` cannot be written: it exists and is not empty (and no force),
    or replacing it would delete one of the `inputs` the package is made from."""
    if out.exists() and not out.is_dir():
        raise ScaffoldError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ScaffoldError(f"{out} already exists and is not empty; choose another --out or pass --force "
                            "to replace it")
    for path in inputs:
        if out.is_dir() and Path(path).resolve().is_relative_to(out.resolve()):
            raise ScaffoldError(f"{path} is inside {out}, which --force would delete; write to another --out "
                                f"(or move {path} out of {out} first)")
    parent = out.absolute().parent
    if parent.exists() and not os.access(parent, os.W_OK):
        raise ScaffoldError(f"cannot write in {parent}")


# --- templates ------------------------------------------------------------------------------------

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{distribution}"
version = "0.1.0"
description = {summary}
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["pv-harness"]

# pv-harness finds installed plugins through this entry-point group.
[project.entry-points.pv_harness]
{entry_point} = "{module}"

[tool.setuptools]
packages = ["{module}"]

[tool.setuptools.package-data]
{module} = ["*.json"]
"""

MODULE = '''\
"""pv-harness plugin `{entry_point}`: registers the trait{s} in TRAIT_FILES, from the JSON next to this file.

Created by {created_by}. Edit the JSON to change a trait; `pv traits validate` checks it.
"""

import json
from importlib.resources import files

from pv_harness.hookspecs import hookimpl

TRAIT_FILES = {trait_files!r}


@hookimpl
def register_traits(register):
    for trait_file in TRAIT_FILES:
        register(json.loads(files(__name__).joinpath(trait_file).read_text(encoding="utf-8")))
'''

README = """\
# {distribution}

A pv-harness trait plugin for {listed}.

{descriptions}

## Install and use

```bash
pip install -e {folder}            # or: pip install {folder}
pv traits show {first}
inspect eval pv_harness/persona_collect -T trait={first} --model pv/smollm2 --model-role grader=<judge model>
```

Once installed, {listed} appear{s_verb} in `pv traits list` and work{s_verb} in every pv-harness task
(`-T trait=NAME`). `PV_HARNESS_PLUGINS={entry_point}` loads this plugin alone.

## What is in it

{contents}
- `trait_data_extract/NAME.json`, `trait_data_eval/NAME.json`: the same definitions in the
  persona-vectors paper's format (Chen et al. 2025), for its scripts. After editing a JSON above,
  rewrite them with `pv traits export NAME -o .`

## How it was made

{provenance}
"""

CONTENTS = """\
- `{module}/{name}.json`: the definition of `{name}` pv-harness loads (edit this one): {pairs} instruction
  pairs, {n_extract} extraction questions, {n_eval} held-out evaluation questions and the judge prompt;
  assistant names in `You are a/an {{name}} assistant.`: `{pos_name}` (pos), `{neg_name}` (neg)."""


def _provenance_lines(provenance: dict[str, Any]) -> str:
    lines = [f"- {key}: {value}" for key, value in provenance.items() if value not in (None, "")]
    return "\n".join(lines) if lines else "- written by hand"


def render_files(traits: Sequence[Trait], *, plugin: str, folder_name: str,
                 provenance: dict[str, Any] | None = None) -> dict[str, str]:
    """Relative path -> text for every file of the package of plugin `plugin` holding `traits`."""
    names = package_names(plugin)
    provenance = {"created by": f"`pv traits new` (pv-harness {__version__})", **(provenance or {})}
    listed = ", ".join(f"`{trait.name}`" for trait in traits)
    several = len(traits) > 1
    files = {
        "pyproject.toml": PYPROJECT.format(
            distribution=names.distribution,
            summary=json.dumps(f"pv-harness trait plugin: {', '.join(trait.name for trait in traits)}"),
            entry_point=names.entry_point,
            module=names.module,
        ),
        f"{names.module}/__init__.py": MODULE.format(
            entry_point=names.entry_point, s="s" * several, created_by=provenance["created by"],
            trait_files=[f"{trait.name}.json" for trait in traits]),
        "README.md": README.format(
            distribution=names.distribution,
            listed=listed,
            s_verb="" if several else "s",
            descriptions="\n".join(f"- `{trait.name}`: " + "\n  ".join(textwrap.wrap(trait.description, 96))
                                   for trait in traits),
            folder=folder_name,
            first=traits[0].name,
            entry_point=names.entry_point,
            contents="\n".join(CONTENTS.format(
                module=names.module, name=trait.name, pairs=len(trait.instructions),
                n_extract=len(trait.extraction_questions), n_eval=len(trait.evaluation_questions),
                pos_name=trait.assistant_name("pos"), neg_name=trait.assistant_name("neg")) for trait in traits),
            provenance=_provenance_lines(provenance),
        ),
    }
    return files


def write_plugin(traits: Trait | Sequence[Trait], out: str | Path, *, plugin: str | None = None,
                 force: bool = False, provenance: dict[str, Any] | None = None,
                 inputs: Sequence[Path] = ()) -> list[Path]:
    """Write the package of `traits` (one, or several with a `plugin` name) into `out` atomically; returns
    the files written (under `out`).

    With `force` an existing `out` is replaced, only once the new package is complete, and never when one of
    the `inputs` it was made from lies inside it.
    """
    traits = [traits] if isinstance(traits, Trait) else list(traits)
    if not traits:
        raise ScaffoldError("no traits to write")
    if plugin is None:
        if len(traits) > 1:
            raise ScaffoldError("a package of several traits needs a plugin name")
        plugin = traits[0].name
    out = Path(out)
    check_destination(out, force=force, inputs=inputs)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    names = package_names(plugin)
    staging = Path(tempfile.mkdtemp(dir=out.absolute().parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        relative: list[Path] = []
        rendered = render_files(traits, plugin=plugin, folder_name=str(out), provenance=provenance)
        for rel, text in rendered.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            relative.append(Path(rel))
        for trait in traits:
            atomic_write_json(staging / names.module / f"{trait.name}.json", trait.model_dump(exclude_none=True))
            relative.append(Path(names.module) / f"{trait.name}.json")
            for path in trait.export_paper(staging):
                relative.append(path.relative_to(staging))
        os.chmod(staging, 0o755 & ~_umask())
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out / rel for rel in sorted(relative)]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _move_into_place(staging: Path, out: Path) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        os.replace(staging, out)  # an empty folder is replaced in one step
        return
    # --force over a non-empty folder: set the old one aside, move the new one in, then delete the old
    aside = Path(tempfile.mkdtemp(dir=out.absolute().parent, prefix=f".{out.name}.", suffix=".old"))
    os.rmdir(aside)
    os.replace(out, aside)
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(aside, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)
