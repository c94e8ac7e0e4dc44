"""The `evil` trait: its definition is `datasets/traits/evil.json`."""

from pv_harness.default_plugins import bundled_trait_hook

register_traits = bundled_trait_hook("evil")
