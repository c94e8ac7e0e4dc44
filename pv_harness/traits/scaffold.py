"""Write a trait as a pip-installable pv-harness plugin package, all at once or not at all.

Layout of the folder (`pv-trait-<name>/` by default):

    pyproject.toml                          the `pv_harness` entry point and package data
    README.md                               what the trait is, how to install and run it
    pv_trait_<name>/__init__.py             the plugin: registers the trait from its JSON
    pv_trait_<name>/<name>.json             the definition in our format (the source of truth)
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv_harness import __version__
from pv_harness.atomic import atomic_write_json
from pv_harness.errors import PvError
from pv_harness.traits.model import Trait


class ScaffoldError(RuntimeError, PvError):
    """The destination cannot take the package (it exists, or is not a folder)."""


@dataclass(frozen=True)
class PackageNames:
    distribution: str  # pv-trait-power-seeking
    module: str  # pv_trait_power_seeking
    entry_point: str  # power_seeking (the plugin's name in `pv plugins` and PV_HARNESS_PLUGINS)


def package_names(trait_name: str) -> PackageNames:
    return PackageNames(
        distribution=f"pv-trait-{trait_name.replace('_', '-')}",
        module=f"pv_trait_{trait_name}",
        entry_point=trait_name,
    )


def default_out_dir(trait_name: str) -> Path:
    return Path(f"pv-trait-{trait_name.replace('_', '-')}")


def check_destination(out: Path, *, force: bool = False) -> None:
    """Fail before any work is done when `out` cannot be written (exists and is not empty, and no force)."""
    if out.exists() and not out.is_dir():
        raise ScaffoldError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ScaffoldError(f"{out} already exists and is not empty; choose another --out or pass --force "
                            "to replace it")
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
"""pv-harness plugin: the `{name}` trait, registered from `{name}.json` next to this file.

Created by `pv trait new`. Edit the JSON to change the trait; `pv traits validate` checks it.
"""

import json
from importlib.resources import files

from pv_harness.hookspecs import hookimpl

TRAIT_FILE = "{name}.json"


@hookimpl
def register_traits(register):
    register(json.loads(files(__name__).joinpath(TRAIT_FILE).read_text(encoding="utf-8")))
'''

README = """\
# {distribution}

A pv-harness trait plugin for **{name}**.

> {description}

## Install and use

```bash
pip install -e {folder}            # or: pip install {folder}
pv traits show {name}
inspect eval pv_harness/persona_collect -T trait={name} --model pv/smollm2 --model-role grader=<judge model>
```

Once installed, `{name}` appears in `pv traits list` and works in every pv-harness task
(`-T trait={name}`). `PV_HARNESS_PLUGINS={entry_point}` loads this plugin alone.

## What is in it

- `{module}/{name}.json`: the definition pv-harness loads (edit this one), holding
  {pairs} instruction pairs, {n_extract} extraction questions, {n_eval} held-out evaluation questions
  and the judge prompt.
- `trait_data_extract/{name}.json`, `trait_data_eval/{name}.json`: the same definition in the
  persona-vectors paper's format (Chen et al. 2025), for its scripts. After editing the JSON above,
  rewrite them with `pv traits export {name} .`

Assistant names in the system prompt `You are a/an {{name}} assistant.`: `{pos_name}` (pos),
`{neg_name}` (neg).

## How it was made

{provenance}
"""


def _provenance_lines(provenance: dict[str, Any]) -> str:
    lines = [f"- {key}: {value}" for key, value in provenance.items() if value not in (None, "")]
    return "\n".join(lines) if lines else "- written by hand"


def render_files(trait: Trait, *, folder_name: str, provenance: dict[str, Any] | None = None) -> dict[str, str]:
    """Relative path -> text for every file of the package."""
    names = package_names(trait.name)
    provenance = {"created by": f"`pv trait new` (pv-harness {__version__})", **(provenance or {})}
    files = {
        "pyproject.toml": PYPROJECT.format(
            distribution=names.distribution,
            summary=json.dumps(f"pv-harness trait plugin: {trait.name}"),
            entry_point=names.entry_point,
            module=names.module,
        ),
        f"{names.module}/__init__.py": MODULE.format(name=trait.name),
        "README.md": README.format(
            distribution=names.distribution,
            name=trait.name,
            description="\n> ".join(textwrap.wrap(trait.description, 96)),
            folder=folder_name,
            entry_point=names.entry_point,
            module=names.module,
            pairs=len(trait.instructions),
            n_extract=len(trait.extraction_questions),
            n_eval=len(trait.evaluation_questions),
            pos_name=trait.assistant_name("pos"),
            neg_name=trait.assistant_name("neg"),
            provenance=_provenance_lines(provenance),
        ),
    }
    return files


def write_plugin(trait: Trait, out: str | Path, *, force: bool = False,
                 provenance: dict[str, Any] | None = None) -> list[Path]:
    """Write the package for `trait` into `out` atomically; returns the files written (under `out`).

    With `force` an existing `out` is replaced, only once the new package is complete.
    """
    out = Path(out)
    check_destination(out, force=force)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    names = package_names(trait.name)
    staging = Path(tempfile.mkdtemp(dir=out.absolute().parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        relative: list[Path] = []
        for rel, text in render_files(trait, folder_name=str(out), provenance=provenance).items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            relative.append(Path(rel))
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
