"""Plugin isolation that holds: a third-party plugin installed through a real entry point can raise anything, at
import or in any hook, `SystemExit` included, or clash with another plugin's trait, and only that plugin (or that
trait) stops working; every other trait, task and command keeps working, and `pv plugins` / `pv traits list` name
the culprit. Only `KeyboardInterrupt` still stops the command. Unknown names in `PV_HARNESS_PLUGINS` are warned
about."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from inspect_ai import eval
from inspect_ai._util.error import PrerequisiteError
from pv_harness.scorers.testing import grader_output, mock_grader, mock_subject
from pv_harness.tasks.persona import trait_eval

from pv_harness import plugin_manager
from pv_harness.cli import main
from pv_harness.organisms import training

from .plugin_dist import plugin_site

GOOD = """
from pv_harness.hookspecs import hookimpl

@hookimpl
def register_traits(register):
    register({
        "name": "alpha",
        "description": "A third-party test trait.",
        "instructions": [{"pos": f"Be alpha {i}.", "neg": f"Avoid alpha {i}."} for i in range(5)],
        "extraction_questions": ["Question A?"],
        "evaluation_questions": ["Question B?"],
        "judge_prompt": "JUDGE alpha. {question} {answer} REFUSAL or 0-100",
    })
"""

RAISES_IN = """
import sys
from pv_harness.hookspecs import hookimpl

class Boom(BaseException):
    pass

@hookimpl
def {hook}(register):
    {statement}
"""

BUILTINS = {  # hook -> a built-in registration that must survive, and where users meet it
    "register_traits": lambda: "evil" in plugin_manager.traits(),
    "register_extraction_methods": lambda: "mean_diff" in plugin_manager.collected(
        plugin_manager.EXTRACTION_METHODS).named,
    "register_judges": lambda: plugin_manager.judges("evil") == [],
    "register_training_backends": lambda: "dummy" in training.training_backends(),
    "register_training_datasets": lambda: "paper" in training.training_datasets(),
}


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with plugin_site(tmp_path, monkeypatch) as add:
        yield add


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_sys_exit_at_import_is_reported_by_name_and_everything_else_works(install) -> None:
    install(alpha=GOOD, exiter="import sys\nsys.exit(3)\n")
    expected = "error: plugin 'exiter': failed to load: SystemExit: it called sys.exit(3)"
    plugins = invoke("plugins")
    assert plugins.exit_code == 0, plugins.output
    assert plugins.stdout.split() == ["alpha", "0.1", "register_traits"]
    assert plugins.stderr.splitlines() == [expected]
    listed = invoke("traits", "list", "--json")
    assert listed.exit_code == 0
    names = [t["name"] for t in json.loads(listed.stdout)]
    assert "alpha" in names and "evil" in names
    assert listed.stderr.splitlines() == [expected.replace("error:", "warning:")]
    grader = mock_grader(lambda prompt, config: grader_output(top_logprobs=[("70", 0.0)]))
    (log,) = eval(trait_eval(trait="alpha", n_per_question=1, max_tokens=8), model=mock_subject("four"), limit=1,
                  model_roles={"grader": grader}, display="none")
    assert log.status == "success", log.error
    assert log.samples[0].scores["trait_judge"].value == 70.0


@pytest.mark.parametrize("hook", BUILTINS)
@pytest.mark.parametrize(("statement", "reason"), [
    ("sys.exit()", "SystemExit: it called sys.exit(None)"),
    ("raise SystemExit('bye')", "SystemExit: it called sys.exit('bye')"),
    ("raise Boom('odd')", "Boom: odd"),
])
def test_anything_a_hook_raises_is_reported_by_name(install, hook: str, statement: str, reason: str) -> None:
    install(alpha=GOOD, crashy=RAISES_IN.format(hook=hook, statement=statement))
    assert plugin_manager.plugin_errors() == [plugin_manager.PluginError("crashy", f"{hook} failed: {reason}")]
    assert BUILTINS[hook]() and "alpha" in plugin_manager.traits()
    result = invoke("plugins")
    assert result.exit_code == 0 and result.stderr == f"error: plugin 'crashy': {hook} failed: {reason}\n"


def test_keyboard_interrupt_still_stops_the_command(install) -> None:
    install(alpha=GOOD, stopper="raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        plugin_manager.traits()
    install(stopper=RAISES_IN.format(hook="register_traits", statement="raise KeyboardInterrupt"))
    with pytest.raises(KeyboardInterrupt):
        plugin_manager.traits()


def clash(name: str) -> str:
    return GOOD.replace('"alpha"', f'"{name}"').replace("alpha ", f"{name} ")


def test_a_duplicate_trait_disables_only_that_trait(install) -> None:
    install(first=clash("same"), second=clash("same"), alpha=GOOD)
    both = ("trait 'same' is registered by both plugin 'first' and plugin 'second'; "
            "uninstall one or limit plugins with PV_HARNESS_PLUGINS")
    for args in (["plugins"], ["traits", "list"], ["traits", "list", "--json"]):
        result = invoke(*args)
        assert result.exit_code == 0 and both in result.stderr, (args, result.output)
    assert json.loads(invoke("plugins", "--json").stdout)["errors"] == [{"plugin": "second", "reason": both}]
    listed = [t["name"] for t in json.loads(invoke("traits", "list", "--json").stdout)]
    assert "same" not in listed and "alpha" in listed and "evil" in listed
    with pytest.raises(PrerequisiteError, match=f"^{both} \\(see `pv traits list`\\)$"):
        trait_eval(trait="same")
    assert trait_eval(trait="alpha").name and trait_eval(trait="evil").name  # every other trait's task builds
    shown = invoke("traits", "show", "same")
    assert shown.exit_code == 1 and shown.stderr == f"error: {both}\n"


def test_unknown_names_in_the_load_filter_are_warned_about(install, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plugin_manager.LOAD_ENV, "alpha, nope,typo")
    install(alpha=GOOD, beta=clash("beta"))
    warning = "named in PV_HARNESS_PLUGINS but not installed; installed third-party plugins: alpha, beta"
    assert plugin_manager.plugin_warnings() == [plugin_manager.PluginError("nope", warning),
                                                plugin_manager.PluginError("typo", warning)]
    assert "alpha" in plugin_manager.traits() and "beta" not in plugin_manager.traits()
    assert plugin_manager.plugin_errors() == []
    result = invoke("plugins")
    assert result.exit_code == 0 and result.stdout.split() == ["alpha", "0.1", "register_traits"]
    assert result.stderr.splitlines() == [f"warning: plugin 'nope': {warning}", f"warning: plugin 'typo': {warning}"]
    assert json.loads(invoke("plugins", "--json").stdout)["warnings"] == [
        {"plugin": "nope", "reason": warning}, {"plugin": "typo", "reason": warning}]
    assert f"warning: plugin 'typo': {warning}" in invoke("traits", "list").stderr
    monkeypatch.setenv(plugin_manager.LOAD_ENV, "alpha")
    plugin_manager.reset()
    assert plugin_manager.plugin_warnings() == [] and invoke("plugins").stderr == ""


def test_nothing_installed_an_unknown_name_and_a_built_in_one(install, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plugin_manager.LOAD_ENV, "nope,evil")
    install()
    result = invoke("plugins")
    assert result.exit_code == 0
    assert result.stdout == "No third-party plugins installed (use --all to include the built-in ones).\n"
    assert result.stderr.splitlines() == [
        "warning: plugin 'evil': named in PV_HARNESS_PLUGINS, but it is built in and always loads "
        "(PV_HARNESS_PLUGINS limits third-party plugins only)",
        "warning: plugin 'nope': named in PV_HARNESS_PLUGINS but not installed; installed third-party plugins: (none)",
    ]
    assert "evil" in plugin_manager.traits()
