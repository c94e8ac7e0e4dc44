"""The `hallucinating` trait: its definition is `datasets/traits/hallucinating.json`."""

from pv_harness.default_plugins import bundled_trait_hook

register_traits = bundled_trait_hook("hallucinating")
