"""The plugin manager: entry-point loading, broken plugins, duplicates, the load filter, `pv plugins`."""

from __future__ import annotations

import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from click.testing import CliRunner

from pv_harness import plugin_manager
from pv_harness.cli import main

TRAIT = """
from pv_harness.hookspecs import hookimpl

def make(name):
    return {{
        "name": name,
        "description": "A test trait.",
        "instructions": [{{"pos": "Do it.", "neg": "Do not."}}] * 5,
        "extraction_questions": ["Question A?"],
        "evaluation_questions": ["Question B?"],
        "judge_prompt": "{{question}} {{answer}} REFUSAL or 0-100",
    }}

@hookimpl
def register_traits(register):
{body}
"""


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install fake third-party plugins: {entry-point name: register_traits body}."""
    monkeypatch.syspath_prepend(str(tmp_path))
    installed: list[EntryPoint] = []

    def install(**bodies: str) -> None:
        for name, body in bodies.items():
            module = f"fake_pv_plugin_{name}_{len(installed)}"
            (tmp_path / f"{module}.py").write_text(TRAIT.format(body=textwrap.indent(body, "    ")))
            installed.append(EntryPoint(name=name, value=module, group="pv_harness"))
        plugin_manager.reset()

    monkeypatch.setattr(plugin_manager, "entry_points", lambda group: list(installed) if group == "pv_harness" else [])
    yield install
    plugin_manager.reset()
    for name in list(sys.modules):
        if name.startswith("fake_pv_plugin_"):
            del sys.modules[name]


def test_third_party_trait_is_registered(third_party) -> None:
    third_party(alpha='register(make("alpha"))')
    assert "alpha" in plugin_manager.traits()
    assert plugin_manager.trait_plugin("alpha") == "alpha"
    assert "evil" in plugin_manager.traits()
    assert plugin_manager.plugin_errors() == []


def test_broken_import_is_reported_and_others_work(third_party, tmp_path: Path) -> None:
    third_party(alpha='register(make("alpha"))', broken='register(make("broken"))')
    (tmp_path / "fake_pv_plugin_broken_1.py").write_text("raise RuntimeError('boom at import')")
    plugin_manager.reset()
    assert "alpha" in plugin_manager.traits() and "broken" not in plugin_manager.traits()
    (error,) = plugin_manager.plugin_errors()
    assert error.plugin == "broken" and "boom at import" in error.reason


def test_invalid_trait_is_reported_and_others_work(third_party) -> None:
    third_party(alpha='register(make("alpha"))', bad='t = make("bad")\nt["judge_prompt"] = "no slots"\nregister(t)')
    assert "alpha" in plugin_manager.traits() and "bad" not in plugin_manager.traits()
    (error,) = plugin_manager.plugin_errors()
    assert error.plugin == "bad"
    assert "judge_prompt" in error.reason and "'bad'" in error.reason


def test_hook_that_raises_is_reported(third_party) -> None:
    third_party(alpha='register(make("alpha"))', crashy='raise KeyError("nope")')
    assert "alpha" in plugin_manager.traits()
    (error,) = plugin_manager.plugin_errors()
    assert error.plugin == "crashy" and "KeyError" in error.reason


def test_duplicate_trait_names_both_plugins(third_party) -> None:
    third_party(first='register(make("same"))', second='register(make("same"))')
    with pytest.raises(plugin_manager.DuplicateTraitError) as info:
        plugin_manager.traits()
    assert "'first'" in str(info.value) and "'second'" in str(info.value)


def test_duplicate_of_builtin_trait(third_party) -> None:
    third_party(copycat='register(make("evil"))')
    with pytest.raises(plugin_manager.DuplicateTraitError, match="'evil'.*'copycat'"):
        plugin_manager.traits()


def test_env_var_limits_third_party_plugins(third_party, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plugin_manager.LOAD_ENV, "beta")
    third_party(alpha='register(make("alpha"))', beta='register(make("beta"))')
    assert "beta" in plugin_manager.traits() and "alpha" not in plugin_manager.traits()
    assert "evil" in plugin_manager.traits()  # first-party plugins always load
    monkeypatch.setenv(plugin_manager.LOAD_ENV, "")
    plugin_manager.reset()
    assert "beta" not in plugin_manager.traits()


def test_unknown_trait_lists_known_ones() -> None:
    plugin_manager.reset()
    with pytest.raises(plugin_manager.TraitError, match="unknown trait.*evil"):
        plugin_manager.get_trait("nonexistent")


def test_cli_plugins_and_traits(third_party) -> None:
    third_party(alpha='register(make("alpha"))', broken='raise RuntimeError("bad")')
    runner = CliRunner()
    result = runner.invoke(main, ["plugins"])
    assert result.exit_code == 0
    assert "alpha" in result.output and "register_traits" in result.output
    assert "broken" in result.output and "bad" in result.output
    result = runner.invoke(main, ["traits", "list"])
    assert "alpha" in result.output and "paternalism" in result.output
    result = runner.invoke(main, ["traits", "show", "nonexistent"])
    assert result.exit_code == 1 and "unknown trait" in result.output


def test_cli_show_validate_export(tmp_path: Path) -> None:
    plugin_manager.reset()
    runner = CliRunner()
    result = runner.invoke(main, ["traits", "show", "sycophantic"])
    assert result.exit_code == 0 and "judge prompt" in result.output
    result = runner.invoke(main, ["traits", "export", "evil", str(tmp_path)])
    assert result.exit_code == 0
    assert (tmp_path / "trait_data_eval" / "evil.json").exists()
    result = runner.invoke(main, ["traits", "validate", str(tmp_path)])
    assert result.exit_code == 0 and "ok  evil" in result.output
    (tmp_path / "trait_data_extract" / "evil.json").write_text('{"instruction": []}')
    result = runner.invoke(main, ["traits", "validate", str(tmp_path)])
    assert result.exit_code == 1 and "evil.json" in result.output and "questions" in result.output
