"""The `deception` trait: its definition is `datasets/traits/deception.json`."""

from pv_harness.default_plugins import bundled_trait_hook

register_traits = bundled_trait_hook("deception")
