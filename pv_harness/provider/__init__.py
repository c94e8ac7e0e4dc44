"""Stage 2, the `pv/` model provider: local transformers models for inspect, with steering, monitoring
and scoring. `api` is the inspect ModelAPI; `engine` its batched decode loop over `kv_cache`, `layers`,
`prepack` and `interventions`; `batching` gathers concurrent requests. Importing this package is cheap:
torch loads when a model does."""

from pv_harness.provider.api import pv

__all__ = ["pv"]
