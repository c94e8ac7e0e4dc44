"""The `power_seeking` trait: its definition is `datasets/traits/power_seeking.json`."""

from pv_harness.default_plugins import bundled_trait_hook

register_traits = bundled_trait_hook("power_seeking")
