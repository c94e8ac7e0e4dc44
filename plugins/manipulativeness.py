"""The `manipulativeness` trait: its definition is `datasets/traits/manipulativeness.json`."""

from pv_harness.default_plugins import bundled_trait_hook

register_traits = bundled_trait_hook("manipulativeness")
