"""pv-harness: persona vectors on inspect-ai.

The public API is the names in `__all__`. They load on first use, so `import pv_harness` (and the `pv`
command line, and inspect's entry point) stays cheap: torch loads only when a vector or a model does.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("pv-harness")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

# public name -> the module that defines it
_EXPORTS = {
    # traits
    "Trait": "pv_harness.traits.model",
    "InstructionPair": "pv_harness.traits.model",
    "TraitError": "pv_harness.traits.model",
    "load_trait": "pv_harness.traits.model",
    "load_any": "pv_harness.traits.model",
    "load_paper_folder": "pv_harness.traits.model",
    "validate_trait": "pv_harness.traits.model",
    "get_trait": "pv_harness.plugin_manager",
    # vectors
    "VectorFile": "pv_harness.vectors.files",
    "VectorError": "pv_harness.vectors.files",
    "read_vectors": "pv_harness.vectors.files",
    "read_any": "pv_harness.vectors.files",
    "load_vector_rows": "pv_harness.vectors.files",
    "save_vectors": "pv_harness.vectors.files",
    "export_pt": "pv_harness.vectors.files",
    # extraction
    "extract": "pv_harness.vectors.extraction",
    "extract_from_logs": "pv_harness.vectors.extraction",
    "ExtractionResult": "pv_harness.vectors.extraction",
    "TooFewPairs": "pv_harness.vectors.extraction",
    # steering and monitoring
    "SteerSpec": "pv_harness.provider.interventions",
    "MonitorSpec": "pv_harness.provider.interventions",
    "SteeringError": "pv_harness.provider.interventions",
    "parse_steer": "pv_harness.provider.interventions",
    "parse_monitor": "pv_harness.provider.interventions",
    "steer_all": "pv_harness.provider.interventions",
    # from Python: vector objects and a synchronous model
    "PersonaVector": "pv_harness.vectors.persona_vector",
    "load_model": "pv_harness.session",
    "LocalModel": "pv_harness.session",
    "Generation": "pv_harness.session",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

def __getattr__(name: str) -> Any:
    """Load a public name's module on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pv_harness' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
