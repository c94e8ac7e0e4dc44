"""Install a fake third-party plugin the way pip leaves one: a module plus a `<name>-0.1.dist-info` folder whose
entry_points.txt names it in the `pv_harness` group, both in a folder on sys.path. The plugin manager then finds
it through `importlib.metadata`, exactly as it finds a real installed plugin."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pv_harness import plugin_manager

PREFIX = "fake_pv_plugin_"


def write_plugin(site: Path, name: str, source: str, version: str = "0.1") -> str:
    """Write plugin `name` (entry-point name) with module `source` into `site`; returns the module name."""
    module = f"{PREFIX}{name}"
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    dist = site / f"{module}-{version}.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(f"[pv_harness]\n{name} = {module}\n")
    importlib.invalidate_caches()
    return module


@contextmanager
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """For fixtures: yields `install(name=source, ...)`, which writes plugins and `reset()`s the manager."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv(plugin_manager.LOAD_ENV, raising=False)

    def install(**sources: str) -> None:
        for name, source in sources.items():
            write_plugin(site, name, source)
        plugin_manager.reset()

    try:
        yield install
    finally:
        plugin_manager.reset()
        for module in [m for m in sys.modules if m.startswith(PREFIX)]:
            del sys.modules[module]
