"""The plugin manager: entry-point loading, broken plugins, duplicates, the load filter, `pv plugins`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from pv_harness import hookspecs, plugin_manager
from pv_harness.cli import main
from pv_harness.organisms import training

from .plugin_dist import PREFIX, plugin_site

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
    """Install fake third-party plugins through real entry points: {entry-point name: register_traits body}."""
    with plugin_site(tmp_path, monkeypatch) as install:
        yield lambda **bodies: install(**{name: TRAIT.format(body=textwrap.indent(body, "    "))
                                          for name, body in bodies.items()})


def test_third_party_trait_is_registered(third_party) -> None:
    third_party(alpha='register(make("alpha"))')
    assert "alpha" in plugin_manager.traits()
    assert plugin_manager.trait_plugin("alpha") == "alpha"
    assert "evil" in plugin_manager.traits()
    assert plugin_manager.plugin_errors() == []


def test_broken_import_is_reported_and_others_work(third_party, tmp_path: Path) -> None:
    third_party(alpha='register(make("alpha"))', broken='register(make("broken"))')
    (tmp_path / "site" / f"{PREFIX}broken.py").write_text("raise RuntimeError('boom at import')")
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


def test_duplicate_trait_is_an_error_naming_both_plugins_and_the_rest_work(third_party) -> None:
    third_party(first='register(make("same"))', second='register(make("same"))\nregister(make("other"))')
    both = ("trait 'same' is registered by both plugin 'first' and plugin 'second'; "
            "uninstall one or limit plugins with PV_HARNESS_PLUGINS")
    assert plugin_manager.plugin_errors() == [plugin_manager.PluginError("second", both)]
    known = plugin_manager.traits()
    assert "same" not in known and "other" in known and "evil" in known  # second's other trait still loads
    with pytest.raises(plugin_manager.DuplicateTraitError) as info:
        plugin_manager.get_trait("same")
    assert str(info.value) == both


def test_duplicate_of_builtin_trait(third_party) -> None:
    third_party(copycat='register(make("evil"))')
    both = "trait 'evil' is registered by both plugin 'evil' and plugin 'copycat'"
    runner = CliRunner()
    listed = runner.invoke(main, ["traits", "list"])
    assert listed.exit_code == 0 and "sycophantic" in listed.stdout and "evil " not in listed.stdout
    assert both in listed.stderr
    plugins = runner.invoke(main, ["plugins"])
    assert plugins.exit_code == 0 and "copycat" in plugins.stdout and both in plugins.stderr
    with pytest.raises(plugin_manager.DuplicateTraitError, match=both):
        plugin_manager.get_trait("evil")
    shown = runner.invoke(main, ["traits", "show", "evil"])
    assert shown.exit_code == 1 and both in shown.stderr


NAMED_HOOKS = {  # hook: (a built-in name, what errors call one, the registry users meet)
    "register_extraction_methods": ("mean_diff", "extraction method",
                                    lambda: plugin_manager.collected(plugin_manager.EXTRACTION_METHODS).named),
    "register_training_backends": ("dummy", "training backend", lambda: training.training_backends()),
    "register_training_datasets": ("paper", "training dataset", lambda: training.training_datasets()),
}
OWNER = {"mean_diff": "extraction", "dummy": "training_local", "paper": "training_data"}
NAMED = """
from pv_harness.hookspecs import hookimpl

def thing(*args, **kwargs):
    return []

@hookimpl
def {hook}(register):
{body}
"""


@pytest.fixture
def named_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install one fake plugin `dup` implementing a `register(name, thing)` hook with the given body."""
    with plugin_site(tmp_path, monkeypatch) as install:
        yield lambda hook, body: install(dup=NAMED.format(hook=hook, body=textwrap.indent(body, "    ")))


@pytest.mark.parametrize("hook", NAMED_HOOKS)
def test_duplicate_name_is_reported_and_the_plugins_other_registrations_load(named_plugin, hook: str) -> None:
    builtin, what, registry = NAMED_HOOKS[hook]
    named_plugin(hook, f'register("{builtin}", thing)\nregister("mine", thing)')
    both = (f"{what} '{builtin}' is registered by both plugin '{OWNER[builtin]}' and plugin 'dup'; "
            "uninstall one or limit plugins with PV_HARNESS_PLUGINS")
    result = CliRunner().invoke(main, ["plugins"])  # first thing in a fresh plugin manager
    assert result.exit_code == 0 and f"error: plugin 'dup': {both}" in result.stderr
    assert "mine" in registry() and builtin not in registry()


def test_duplicate_backend_names_both_plugins_where_it_is_used(named_plugin) -> None:
    named_plugin("register_training_backends", 'register("dummy", thing)')
    with pytest.raises(training.TrainingError, match="^training backend 'dummy' is registered by both plugin "
                                                     "'training_local' and plugin 'dup'; uninstall one"):
        training.get_backend("dummy")


def test_invalid_registrations_are_reported_and_valid_ones_load(named_plugin) -> None:
    named_plugin("register_training_datasets", 'register("text", "not callable")\nregister("half")\n'
                                               'register(name="by_keyword", loader=thing)')
    errors = [str(e) for e in plugin_manager.plugin_errors()]
    assert errors == [
        "plugin 'dup': invalid training dataset: 'text': 'not callable' is not callable",
        "plugin 'dup': invalid training dataset: missing a required argument: 'loader'",
    ]
    assert "by_keyword" in training.training_datasets()


def test_a_plugin_registering_a_name_twice_is_reported(named_plugin) -> None:
    named_plugin("register_training_backends", 'register("twice", thing)\nregister("twice", thing)')
    (error,) = plugin_manager.plugin_errors()
    assert error.reason == "training backend 'twice' is registered more than once by plugin 'dup'; register it once"
    assert "twice" not in training.training_backends()


def test_every_hookspec_has_a_registry() -> None:
    specs = {name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "pv_harness_spec")}
    assert set(plugin_manager.HOOKS) == specs and len(specs) == 5


def test_registering_a_plugin_recollects() -> None:
    import types

    plugin_manager.reset()
    assert "late" not in training.training_backends()
    module = types.ModuleType("late_backend")
    module.register_training_backends = hookspecs.hookimpl(lambda register: register("late", object))
    plugin_manager.plugin_manager().register(module, name="late")
    try:
        assert "late" in training.training_backends()
    finally:
        plugin_manager.reset()


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
    unknown = r"trait 'nonexistent': unknown trait; registered traits: .*\bevil\b"
    with pytest.raises(plugin_manager.TraitError, match=unknown):
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


def test_traits_export_never_overwrites_without_force(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["traits", "export", "evil", str(tmp_path)]).exit_code == 0
    mine = tmp_path / "trait_data_eval" / "evil.json"
    mine.write_text('{"edited": true}')
    result = runner.invoke(main, ["traits", "export", "evil", str(tmp_path)])
    assert result.exit_code == 1 and mine.read_text() == '{"edited": true}'
    assert result.stderr == (f"error: {tmp_path / 'trait_data_extract' / 'evil.json'}, {mine} already exist: "
                             "pass --force to overwrite\n")
    assert runner.invoke(main, ["traits", "export", "evil", str(tmp_path), "--force"]).exit_code == 0
    assert json.loads(mine.read_text())["instruction"]
