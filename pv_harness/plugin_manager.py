"""The plugin manager: first-party plugins, installed third-party plugins, and what they register.

Third-party plugins are packages with an entry point in the `pv_harness` group. Set
`PV_HARNESS_PLUGINS` to a comma-separated list of entry-point names to load only those (an empty
value loads none); a listed name no installed plugin has is reported by `plugin_warnings()`. A plugin
that fails to import or whose hook raises (anything, `SystemExit` included; only `KeyboardInterrupt` stops
the command), or that registers something invalid, is reported by name in `plugin_errors()` and
`pv plugins`; the others keep working.

Every `register_*` hook goes through one mechanism, `collected(hook)`: each plugin's `register` calls are
bound to the signature its `hookspecs.Register*` protocol documents and checked, and the result is cached
until the set of plugins changes (or `reset()`). A name two plugins register is a recorded error that
names both; neither registration is used, and every other registration still loads.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
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

TRAITS = "register_traits"
EXTRACTION_METHODS = "register_extraction_methods"
JUDGES = "register_judges"
TRAINING_BACKENDS = "register_training_backends"
TRAINING_DATASETS = "register_training_datasets"


@dataclass(frozen=True)
class PluginError:
    plugin: str
    reason: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r}: {self.reason}"


class DuplicateTraitError(TraitError):
    """Two plugins registered the same trait name."""


@dataclass(frozen=True)
class HookedJudge:
    """A judge scorer a plugin registered for a trait through `register_judges`."""

    plugin: str
    trait: str
    factory: Callable[[Trait], Any]
    replace: bool


@dataclass(frozen=True)
class Registration:
    """One accepted `register(...)` call: the name it registered, the thing, and the plugin."""

    plugin: str
    name: str
    thing: Any


def _accept_trait(plugin: str, trait: Any) -> tuple[str, Trait]:
    trait = validate_trait(trait, source=f"plugin {plugin}")
    return trait.name, trait


def _accept_named(plugin: str, name: Any, thing: Any) -> tuple[str, Any]:
    if not isinstance(name, str) or not name:
        raise ValueError(f"the name must be a non-empty string; got {name!r}")
    if not callable(thing):
        raise TypeError(f"{name!r}: {thing!r} is not callable")
    return name, thing


def _accept_judge(plugin: str, trait_name: Any, scorer_factory: Any, replace: Any) -> tuple[str, HookedJudge]:
    if not isinstance(trait_name, str) or not trait_name:
        raise ValueError(f"the trait name must be a non-empty string; got {trait_name!r}")
    if not callable(scorer_factory):
        raise TypeError(f"scorer_factory for trait {trait_name!r} is not callable")
    return trait_name, HookedJudge(plugin, trait_name, scorer_factory, bool(replace))


@dataclass(frozen=True)
class _Hook:
    what: str  # how messages name one registration: "trait", "training backend"
    register: type  # the hookspecs protocol whose `__call__` is the signature of `register`
    accept: Callable[..., tuple[str, Any]]  # (plugin, *register's arguments) -> (name, thing); raises if invalid
    unique: bool = True  # a name belongs to one plugin (judges: any number per trait)

    @property
    def signature(self) -> inspect.Signature:
        sig = inspect.signature(self.register.__call__)
        return sig.replace(parameters=list(sig.parameters.values())[1:])  # without `self`


HOOKS: dict[str, _Hook] = {
    TRAITS: _Hook("trait", hookspecs.RegisterTrait, _accept_trait),
    EXTRACTION_METHODS: _Hook("extraction method", hookspecs.RegisterExtractionMethod, _accept_named),
    JUDGES: _Hook("judge", hookspecs.RegisterJudge, _accept_judge, unique=False),
    TRAINING_BACKENDS: _Hook("training backend", hookspecs.RegisterTrainingBackend, _accept_named),
    TRAINING_DATASETS: _Hook("training dataset", hookspecs.RegisterTrainingDataset, _accept_named),
}


def _clash_message(what: str, name: str, plugins: list[str]) -> str:
    distinct = list(dict.fromkeys(plugins))
    if len(distinct) == 1:
        return f"{what} {name!r} is registered more than once by plugin {distinct[0]!r}; register it once"
    who = (f"both plugin {distinct[0]!r} and plugin {distinct[1]!r}" if len(distinct) == 2
           else "plugins " + ", ".join(repr(p) for p in distinct[:-1]) + f" and {distinct[-1]!r}")
    return f"{what} {name!r} is registered by {who}; uninstall one or limit plugins with {LOAD_ENV}"


@dataclass(frozen=True)
class Collected:
    """What one hook registered, over every plugin."""

    what: str
    registrations: list[Registration]  # accepted ones in plugin order, less any name that clashed
    named: dict[str, Any]  # unique hooks: name -> thing, sorted by name (empty for judges)
    clashes: dict[str, str]  # name -> why it cannot be used: the plugins that each registered it
    errors: list[PluginError]

    def plugin(self, name: str) -> str:
        """Which plugin registered `name`."""
        for r in self.registrations:
            if r.name == name:
                return r.plugin
        raise KeyError(name)

    def problem(self, name: str) -> str:
        """Why `name` is not in `named`: a clash naming the plugins, or unknown (listing what is installed)."""
        return self.clashes.get(name) or f"unknown {self.what} {name!r}; installed: {', '.join(self.named) or '(none)'}"


class _Manager(pluggy.PluginManager):
    """Counts plugin (un)registrations, so that a collected hook is collected again when plugins change."""

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        self.generation = 0

    def register(self, plugin: object, name: str | None = None) -> str | None:
        self.generation += 1
        return super().register(plugin, name)

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        self.generation += 1
        return super().unregister(plugin, name)


@dataclass
class _State:
    pm: _Manager
    load_errors: list[PluginError]
    load_warnings: list[PluginError]
    versions: dict[str, str]
    collected: dict[str, tuple[int, Collected]] = field(default_factory=dict)  # hook -> (generation, result)


def _allowed() -> set[str] | None:
    value = os.environ.get(LOAD_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _describe(ex: BaseException) -> str:
    """What a plugin raised, in one line (`SystemExit` says so: its message is only the exit code)."""
    if isinstance(ex, SystemExit):
        return f"SystemExit: it called sys.exit({ex.code!r})"
    return f"{type(ex).__name__}: {ex}"


@cache
def _state() -> _State:
    pm = _Manager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    errors: list[PluginError] = []
    versions: dict[str, str] = {}
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name.rsplit(".", 1)[-1])
    allowed = _allowed()
    installed = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)  # a stable plugin order
    for ep in installed:
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.has_plugin(ep.name):
            errors.append(PluginError(ep.name, "name already taken by another plugin; not loaded"))
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except KeyboardInterrupt:
            raise
        except BaseException as ex:  # noqa: BLE001 - a broken third-party plugin must not take the others down
            errors.append(PluginError(ep.name, f"failed to load: {_describe(ex)}"))
            continue
        if ep.dist is not None:
            versions[ep.name] = ep.dist.version
    names = sorted({ep.name for ep in installed})
    warnings = [_not_installed(name, built_in=pm.has_plugin(name), installed=names)
                for name in sorted((allowed or set()) - set(names))]
    return _State(pm, errors, warnings, versions)


def _not_installed(name: str, *, built_in: bool, installed: list[str]) -> PluginError:
    """Why a name in `PV_HARNESS_PLUGINS` loaded nothing: a typo loads nothing, silently otherwise."""
    if built_in:
        return PluginError(name, f"named in {LOAD_ENV}, but it is built in and always loads ({LOAD_ENV} limits "
                                 "third-party plugins only)")
    return PluginError(name, f"named in {LOAD_ENV} but not installed; installed third-party plugins: "
                             f"{', '.join(installed) or '(none)'}")


def reset() -> None:
    """Forget loaded plugins and everything they registered (after installing one, or in tests)."""
    _state.cache_clear()


def plugin_manager() -> pluggy.PluginManager:
    return _state().pm


def _make_register(hook: _Hook, plugin: str, accepted: list[Registration],
                   errors: list[PluginError]) -> Callable[..., None]:
    signature = hook.signature

    def register(*args: Any, **kwargs: Any) -> None:
        try:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            name, thing = hook.accept(plugin, *bound.args)
        except (TypeError, ValueError) as ex:
            errors.append(PluginError(plugin, f"invalid {hook.what}: {ex}"))
            return
        accepted.append(Registration(plugin, name, thing))

    return register


def _collect(pm: pluggy.PluginManager, hook_name: str) -> Collected:
    hook = HOOKS[hook_name]
    accepted: list[Registration] = []
    errors: list[PluginError] = []
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        plugin = pm.get_name(impl.plugin) or repr(impl.plugin)
        try:
            impl.function(register=_make_register(hook, plugin, accepted, errors))
        except KeyboardInterrupt:
            raise
        except BaseException as ex:  # noqa: BLE001 - one plugin's broken hook must not take the others down
            errors.append(PluginError(plugin, f"{hook_name} failed: {_describe(ex)}"))
    if not hook.unique:
        return Collected(hook.what, accepted, {}, {}, errors)
    owners: dict[str, list[str]] = {}
    for r in accepted:
        owners.setdefault(r.name, []).append(r.plugin)
    clashes = {name: _clash_message(hook.what, name, plugins) for name, plugins in owners.items() if len(plugins) > 1}
    errors.extend(PluginError(owners[name][-1], message) for name, message in clashes.items())
    kept = [r for r in accepted if r.name not in clashes]
    named = {r.name: r.thing for r in sorted(kept, key=lambda r: r.name)}
    return Collected(hook.what, kept, named, clashes, errors)


def collected(hook: str) -> Collected:
    """What `hook` registered over every plugin, collected once per set of plugins."""
    state = _state()
    cached = state.collected.get(hook)
    if cached is None or cached[0] != state.pm.generation:
        cached = state.collected[hook] = (state.pm.generation, _collect(state.pm, hook))
    return cached[1]


def traits() -> dict[str, Trait]:
    """Every registered trait by name (a name two plugins registered is left out; see `get_trait`)."""
    return collected(TRAITS).named


def trait_plugin(name: str) -> str:
    """Which plugin registered a trait."""
    return collected(TRAITS).plugin(name)


def get_trait(name: str) -> Trait:
    """A registered trait, or an error naming both plugins of a clash or listing the traits there are."""
    found = collected(TRAITS)
    if name in found.named:
        return found.named[name]
    if name in found.clashes:
        raise DuplicateTraitError(found.clashes[name])
    raise TraitError(f"unknown trait; registered traits: {', '.join(found.named) or '(none)'}", trait=name)


def judges(trait: str) -> list[HookedJudge]:
    """The judges plugins registered for `trait`, in plugin order."""
    return [r.thing for r in collected(JUDGES).registrations if r.name == trait]


def plugin_errors() -> list[PluginError]:
    """Every plugin that failed to load, and every registration any hook refused."""
    return list(_state().load_errors) + [error for hook in HOOKS for error in collected(hook).errors]


def plugin_warnings() -> list[PluginError]:
    """Names in `PV_HARNESS_PLUGINS` that no installed third-party plugin has."""
    return list(_state().load_warnings)


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str | None
    hooks: list[str]
    first_party: bool


def plugin_infos() -> list[PluginInfo]:
    state = _state()
    first_party = {module.rsplit(".", 1)[-1] for module in DEFAULT_PLUGINS}  # names no entry point can take
    infos = []
    for name, plugin in sorted(state.pm.list_name_plugin(), key=lambda item: item[0]):
        hooks = sorted(caller.name for caller in state.pm.get_hookcallers(plugin) or [])
        infos.append(PluginInfo(name, state.versions.get(name), hooks, name in first_party))
    return infos
