"""First-party plugins: one module per trait, each registering its data from `datasets/traits/`."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from pv_harness.hookspecs import hookimpl
from pv_harness.traits.model import Trait, validate_trait


def bundled_trait(name: str) -> Trait:
    """Load one of our own trait files shipped as `pv_harness.datasets/traits/<name>.json`."""
    resource = files("pv_harness.datasets").joinpath("traits", f"{name}.json")
    return validate_trait(json.loads(resource.read_text(encoding="utf-8")), source=f"datasets/traits/{name}.json")


def bundled_trait_hook(name: str) -> Callable[[Callable[[Any], None]], None]:
    """A `register_traits` implementation that registers one bundled trait."""

    @hookimpl(specname="register_traits")
    def register_traits(register: Callable[[Any], None]) -> None:
        register(bundled_trait(name))

    return register_traits
