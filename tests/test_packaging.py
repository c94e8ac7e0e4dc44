"""Distribution: inspect finds our entry point from an editable install and from a built wheel;
a third-party plugin package appears in `pv traits list` right after `pip install`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "plugins" / "examples" / "pv-harness-overconfident"
PV = Path(sys.executable).parent / "pv"

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


def test_entry_point_from_editable_install(tmp_path: Path) -> None:
    registry_file, traits = run(sys.executable, "-c", PROBE, cwd=tmp_path).splitlines()[-2:]
    assert Path(registry_file) == ROOT / "pv_harness" / "_registry.py"
    assert "evil" in traits.split(",")


@pytest.mark.slow
def test_entry_point_from_built_wheel(tmp_path: Path) -> None:
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "-w", str(tmp_path / "dist"), str(ROOT))
    (wheel,) = (tmp_path / "dist").glob("pv_harness-*.whl")
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
