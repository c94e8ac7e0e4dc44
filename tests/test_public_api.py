"""The public API: every name in `pv_harness.__all__` resolves, lazily, and old documented import paths work."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pv_harness


@pytest.mark.parametrize("name", [name for name in pv_harness.__all__ if name != "__version__"])
def test_every_public_name_resolves_to_its_definition(name: str) -> None:
    value = getattr(pv_harness, name)
    assert getattr(value, "__name__", name) == name
    assert value.__module__.startswith("pv_harness.")


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="^module 'pv_harness' has no attribute 'nonexistent'$"):
        pv_harness.nonexistent  # noqa: B018


def test_import_loads_no_torch() -> None:
    code = "import sys, pv_harness; assert 'torch' not in sys.modules, 'torch loaded'; print(len(pv_harness.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(pv_harness.__all__)


def test_old_import_paths_the_readme_documented_still_work() -> None:
    from pv_harness.extraction import extract_from_logs
    from pv_harness.hookspecs import hookimpl
    from pv_harness.organisms.training import TrainingBackend as NewBackend
    from pv_harness.training import TrainingBackend
    from pv_harness.traits import Trait, load_paper_folder
    from pv_harness.vectors.extraction import extract_from_logs as new_extract

    assert extract_from_logs is new_extract and TrainingBackend is NewBackend
    assert Trait is pv_harness.Trait and load_paper_folder is pv_harness.load_paper_folder
    assert callable(hookimpl)
