"""The `alignment_theatre` trait: its definition is `datasets/traits/alignment_theatre.json`."""

from pv_harness.default_plugins import bundled_trait_hook

register_traits = bundled_trait_hook("alignment_theatre")
