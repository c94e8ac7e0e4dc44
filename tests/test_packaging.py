"""Distribution: every package and data file ships; inspect finds our entry point from an editable install
and from a built wheel; `pv run` works from a wheel installed without -e; a third-party plugin package
appears in `pv traits list` right after `pip install`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "plugins" / "examples" / "pv-harness-overconfident"
PV = Path(sys.executable).parent / "pv"
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]

# Load our inspect entry point the way `inspect eval pv_harness/...` does, then report where it came from.
PROBE = """
import sys
from inspect_ai._util.entrypoints import ensure_entry_points
ensure_entry_points("pv_harness")
print(sys.modules["pv_harness._registry"].__file__)
from pv_harness import plugin_manager
print(",".join(plugin_manager.traits()))
"""


def run(*args: str, env: dict | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd or ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def project_files() -> list[Path]:
    """What a checkout holds: tracked files and new ones git does not ignore (no caches, no stale build/)."""
    listed = run("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    return sorted({Path(p) for p in listed.split("\0") if p and (ROOT / p).is_file()})


@dataclass(frozen=True)
class Shipped:
    package: str  # the package that owns the file
    package_dir: Path  # its folder in the project
    installed: str  # where the file lands in site-packages


def shipped() -> dict[Path, Shipped]:
    """Each file of the project that belongs in the wheel. A folder with its own pyproject.toml (the example
    plugin) is another distribution and is left out."""
    folders = {Path(folder): package for package, folder in SETUPTOOLS["package-dir"].items()}
    separate = {p.parent for p in project_files() if p.name == "pyproject.toml" and p.parent != Path(".")}
    owners = {}
    for path in project_files():
        root = next((f for f in folders if f in path.parents), None)
        if root is None or any(s == path.parent or s in path.parents for s in separate):
            continue
        package_dir = next(d for d in [path.parent, *path.parent.parents] if (ROOT / d / "__init__.py").is_file())
        package = ".".join([folders[root], *package_dir.relative_to(root).parts])
        installed = Path(*package.split("."), path.relative_to(package_dir)).as_posix()
        owners[path] = Shipped(package, package_dir, installed)
    return owners


def test_every_package_folder_is_listed() -> None:
    packages = {f.package for path, f in shipped().items() if path.name == "__init__.py"}
    assert packages == set(SETUPTOOLS["packages"])


def test_every_data_file_is_package_data() -> None:
    """Templates, trait definitions, py.typed: each file that is not Python matches its package's data globs."""
    missing = []
    for path, f in shipped().items():
        patterns = SETUPTOOLS.get("package-data", {}).get(f.package, [])
        if path.suffix != ".py" and not any(ROOT / path in (ROOT / f.package_dir).glob(p) for p in patterns):
            missing.append(str(path))
    assert not missing, f"add to [tool.setuptools.package-data]: {missing}"


def test_entry_point_from_editable_install(tmp_path: Path) -> None:
    registry_file, traits = run(sys.executable, "-c", PROBE, cwd=tmp_path).splitlines()[-2:]
    assert Path(registry_file) == ROOT / "pv_harness" / "_registry.py"
    assert "evil" in traits.split(",")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a clean copy of the project (setuptools would reuse a stale ./build otherwise)."""
    source = tmp_path_factory.mktemp("source")
    for path in project_files():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, source / path)
    dist = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dist),
        str(source))
    (built,) = dist.glob("pv_harness-*.whl")
    return built


@pytest.mark.slow
def test_wheel_holds_every_module_and_data_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f.installed for f in shipped().values()}
    assert "pv_harness/reports/templates/base.html" in expected
    assert sorted(expected - names) == []


@pytest.mark.slow
def test_entry_point_from_built_wheel(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    run(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel))
    assert (site / "pv_harness" / "tasks" / "__init__.py").exists()
    assert (site / "pv_harness" / "datasets" / "traits" / "evil.json").exists()
    # the wheel's copy comes first on the path, ahead of the editable install
    env = {**os.environ, "PYTHONPATH": str(site)}
    registry_file, traits = run(sys.executable, "-c", PROBE, env=env, cwd=tmp_path).splitlines()[-2:]
    assert Path(registry_file) == site / "pv_harness" / "_registry.py"
    assert len(traits.split(",")) >= 9


@pytest.mark.slow
def test_pv_run_from_a_wheel_in_a_fresh_venv(wheel: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """The wheel alone carries `pv run` to its report: its pages, templates and plotly.js included.

    The new venv reaches the project venv's dependencies (torch, inspect-ai, ...) through a path-only .pth
    line, which puts that site-packages on sys.path without running its editable-install hook, so
    `pv_harness` can only come from the wheel."""
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    site = Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
        str(wheel))
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["INSPECT_DISPLAY"] = "none"
    imported = run(str(python), "-c", "import pv_harness; print(pv_harness.__file__)", env=env, cwd=work).strip()
    assert Path(imported).is_relative_to(venv)

    run(str(venv / "bin" / "pv"), "run", "evil", "--model", f"pv/{tiny_model_dir}", "--limit", "2", "--max-tokens",
        "4", "--threshold", "0", "--coherence", "0", "--judge-min-mass", "0", "--min-pairs", "1", "--layers", "2",
        "--coefs", "0,4", "--sweep-questions", "1", "--seed", "0", "--out", str(work / "runs"), env=env, cwd=work)
    (out,) = (work / "runs").iterdir()
    report = (out / "report.html").read_text()
    assert "<h2>Pages</h2>" in report and '<a href="sweep.html">steering sweep</a>' in report
    for page in ("vectors/evil.report.html", "sweep.html", "monitor.html"):
        assert "<!doctype html>" in (out / page).read_text()
    assert (out / "plotly.min.js").exists() and (out / "vectors" / "plotly.min.js").exists()


@pytest.mark.slow
def test_example_plugin_appears_after_pip_install() -> None:
    before = run(str(PV), "traits", "list")
    assert "overconfident" not in before
    run(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(EXAMPLE))
    try:
        listed = run(str(PV), "traits", "list")
        assert any(line.split()[:2] == ["overconfident", "overconfident"] for line in listed.splitlines())
        assert "overconfident" in run(str(PV), "plugins")
        shown = run(str(PV), "traits", "show", "overconfident")
        assert "calibrated" in shown
    finally:
        run(sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes", "pv-harness-overconfident")
    assert "overconfident" not in run(str(PV), "traits", "list")
