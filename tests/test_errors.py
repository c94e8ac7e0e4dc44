"""Every exception the project defines derives from `PvError` and keeps its builtin base; the base is import-light."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

from pv_harness.errors import PvError
from pv_harness.provider.interventions import StopForward

PACKAGES = ["pv_harness", "pv_harness.default_plugins", "pv_harness.tasks", "pv_harness.solvers",
            "pv_harness.scorers", "pv_harness.datasets"]
EXPECTED = {  # every error the project defines, with the builtin base `except` clauses rely on
    "VectorError": ValueError, "TooFewPairs": RuntimeError, "TraitError": ValueError,
    "TraitGenerationError": RuntimeError, "DefinitionProblems": ValueError, "ScaffoldError": RuntimeError,
    "LayerDiscoveryError": ValueError, "SteeringError": ValueError, "PVRequestError": ValueError,
    "DuplicateTraitError": ValueError, "TrainingError": RuntimeError, "ExperimentError": ValueError,
    "ExportError": ValueError, "ModelStoreError": RuntimeError, "JudgeConfigError": ValueError,
    "LikelihoodError": RuntimeError, "RunInterrupted": RuntimeError, "RunOptionsError": ValueError,
    "MissingGraderError": RuntimeError, "LogError": ValueError, "NoLocalWeights": ValueError,
    "DtypeError": ValueError, "PVModelArgError": ValueError,
}


def project_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of the installed package (first-party plugins included)."""
    found: dict[str, type[BaseException]] = {}
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, f"{package_name}."):
            module = importlib.import_module(info.name)
            for name, obj in vars(module).items():
                if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                    found[name] = obj
    return found


def test_every_project_exception_derives_from_pv_error_and_keeps_its_builtin_base() -> None:
    found = project_exceptions()
    assert set(found) == set(EXPECTED) | {"StopForward", "PvError"}
    for name, builtin in EXPECTED.items():
        assert issubclass(found[name], PvError) and issubclass(found[name], builtin), name


def test_the_control_flow_signal_is_not_an_error() -> None:
    assert not issubclass(StopForward, PvError)


def test_the_error_base_imports_nothing_heavy() -> None:
    code = ("import sys, pv_harness.errors; "
            "print(sorted(m for m in ('torch', 'inspect_ai', 'transformers', 'pluggy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
