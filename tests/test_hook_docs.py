"""Every hookspec is documented in README.md's "Plugin hooks" section, with its exact arguments and those of its
`register` callable (as datasette tests its plugin hook docs); the hookspec docstrings say the same."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from pv_harness import hookspecs, plugin_manager

README = Path(__file__).resolve().parents[1] / "README.md"
SPECS = sorted(name for name, fn in vars(hookspecs).items() if hasattr(fn, f"{hookspecs.PROJECT}_spec"))


def arguments(signature: inspect.Signature, *, skip_self: bool = False) -> str:
    params = list(signature.parameters.values())[1 if skip_self else 0:]
    return ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params)


def documented() -> dict[str, tuple[str, str]]:
    """hook name -> (its arguments, the first `register(...)` arguments), from README's "Plugin hooks"."""
    text = README.read_text()
    section = text.split("\n## Plugin hooks\n", 1)[1].split("\n## ", 1)[0]
    docs = {}
    for block in section.split("\n### ")[1:]:
        heading = re.fullmatch(r"`(\w+)\((.*)\)`", block.splitlines()[0])
        assert heading, f"hook heading {block.splitlines()[0]!r} is not `name(arguments)`"
        call = re.search(r"`register\((.*?)\)`", block)
        docs[heading[1]] = (heading[2], call[1] if call else "")
    return docs


def test_every_hook_is_documented_and_nothing_else() -> None:
    assert len(SPECS) == 5
    assert sorted(documented()) == SPECS


@pytest.mark.parametrize("hook", SPECS)
def test_hook_documentation_has_the_exact_arguments(hook: str) -> None:
    spec = getattr(hookspecs, hook)
    register = plugin_manager.HOOKS[hook].register  # the protocol the plugin manager binds `register` calls to
    hook_args, register_args = documented()[hook]
    assert hook_args == arguments(inspect.signature(spec))
    assert register_args == arguments(inspect.signature(register.__call__), skip_self=True)
    assert f"`register({register_args})`" in inspect.getdoc(spec)
    assert inspect.get_annotations(spec)["register"] == register.__name__
