"""The plugin manager: first-party plugins, installed third-party plugins, and what they register.

Third-party plugins are packages with an entry point in the `pv_harness` group. Set
`PV_HARNESS_PLUGINS` to a comma-separated list of entry-point names to load only those (an empty
value loads none). A plugin that fails to import, or registers something invalid, is reported
by name in `plugin_errors()` and `pv plugins`; the others keep working.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

import pluggy

from pv_harness import hookspecs
from pv_harness.traits.model import Trait, TraitError, validate_trait

ENTRY_POINT_GROUP = hookspecs.PROJECT
LOAD_ENV = "PV_HARNESS_PLUGINS"

DEFAULT_PLUGINS = [
    "pv_harness.default_plugins.evil",
    "pv_harness.default_plugins.sycophantic",
    "pv_harness.default_plugins.hallucinating",
    "pv_harness.default_plugins.paternalism",
    "pv_harness.default_plugins.deception",
    "pv_harness.default_plugins.manipulativeness",
    "pv_harness.default_plugins.corrigibility",
    "pv_harness.default_plugins.power_seeking",
    "pv_harness.default_plugins.alignment_theatre",
    "pv_harness.default_plugins.extraction",
    "pv_harness.default_plugins.training_local",
    "pv_harness.default_plugins.training_openai",
    "pv_harness.default_plugins.training_tinker",
    "pv_harness.default_plugins.training_data",
]


@dataclass(frozen=True)
class PluginError:
    plugin: str
    reason: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r}: {self.reason}"


class DuplicateTraitError(TraitError):
    """Two plugins registered the same trait name."""


@dataclass
class _State:
    pm: pluggy.PluginManager
    errors: list[PluginError]
    versions: dict[str, str]


def _allowed() -> set[str] | None:
    value = os.environ.get(LOAD_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


@cache
def _state() -> _State:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    errors: list[PluginError] = []
    versions: dict[str, str] = {}
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name.rsplit(".", 1)[-1])
    allowed = _allowed()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.has_plugin(ep.name):
            errors.append(PluginError(ep.name, "name already taken by another plugin; not loaded"))
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as ex:  # a broken third-party plugin must not take the others down
            errors.append(PluginError(ep.name, f"failed to load: {type(ex).__name__}: {ex}"))
            continue
        if ep.dist is not None:
            versions[ep.name] = ep.dist.version
    return _State(pm, errors, versions)


def reset() -> None:
    """Forget loaded plugins (after installing one, or in tests)."""
    _state.cache_clear()
    _traits.cache_clear()
    extraction_methods.cache_clear()
    from pv_harness.organisms import training

    training.training_backends.cache_clear()
    training.training_datasets.cache_clear()


def plugin_manager() -> pluggy.PluginManager:
    return _state().pm


def _plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    return pm.get_name(plugin) or repr(plugin)


def collect(hook_name: str, make_register: Callable[[str], Callable[..., None]]) -> None:
    """Call one hook plugin by plugin, giving each a `register` that knows the plugin's name."""
    pm = plugin_manager()
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        name = _plugin_name(pm, impl.plugin)
        try:
            impl.function(register=make_register(name))
        except DuplicateTraitError:
            raise
        except Exception as ex:
            _state().errors.append(PluginError(name, f"{hook_name} failed: {type(ex).__name__}: {ex}"))


@cache
def _traits() -> dict[str, tuple[Trait, str]]:
    found: dict[str, tuple[Trait, str]] = {}

    def make_register(plugin: str) -> Callable[[Any], None]:
        def register(trait: Any) -> None:
            try:
                trait = validate_trait(trait, source=f"plugin {plugin}")
            except TraitError as ex:
                _state().errors.append(PluginError(plugin, f"invalid trait: {ex}"))
                return
            if trait.name in found and found[trait.name][1] != plugin:
                raise DuplicateTraitError(
                    f"trait {trait.name!r} is registered by both plugin {found[trait.name][1]!r} and "
                    f"plugin {plugin!r}; uninstall one or limit plugins with {LOAD_ENV}",
                    trait=trait.name,
                )
            found[trait.name] = (trait, plugin)

        return register

    collect("register_traits", make_register)
    return dict(sorted(found.items()))


def traits() -> dict[str, Trait]:
    """Every registered trait by name."""
    return {name: trait for name, (trait, _) in _traits().items()}


def trait_plugin(name: str) -> str:
    """Which plugin registered a trait."""
    return _traits()[name][1]


def get_trait(name: str) -> Trait:
    """A registered trait, or an error listing the ones there are."""
    known = traits()
    if name not in known:
        raise TraitError(f"unknown trait; registered traits: {', '.join(known) or '(none)'}", trait=name)
    return known[name]


def collect_named(hook_name: str, what: str) -> dict[str, Any]:
    """Call a `register(name, thing)` hook; a name registered twice is reported against its plugin."""
    found: dict[str, Any] = {}

    def make_register(plugin: str) -> Callable[..., None]:
        def register(name: str, thing: Any) -> None:
            if name in found:
                raise ValueError(f"{what} {name!r} registered twice (plugin {plugin!r})")
            found[name] = thing

        return register

    collect(hook_name, make_register)
    return found


@cache
def extraction_methods() -> dict[str, Callable[[], Any]]:
    """Extraction methods by name (`mean_diff`, `pca`, and any a plugin adds)."""
    return collect_named("register_extraction_methods", "extraction method")


def plugin_errors() -> list[PluginError]:
    traits()  # registration errors are found while collecting
    return list(_state().errors)


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str | None
    hooks: list[str]
    first_party: bool


def plugin_infos() -> list[PluginInfo]:
    state = _state()
    infos = []
    for name, plugin in sorted(state.pm.list_name_plugin()):
        hooks = sorted(caller.name for caller in state.pm.get_hookcallers(plugin) or [])
        first_party = getattr(plugin, "__name__", "").startswith("pv_harness.default_plugins.")
        infos.append(PluginInfo(name, state.versions.get(name), hooks, first_party))
    return infos
