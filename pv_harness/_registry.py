"""What inspect imports through the `inspect_ai` entry point: our tasks and model provider.

Keep this module cheap to import: heavy libraries (torch, transformers) load inside factories.
"""

from pv_harness.provider import pv  # noqa: F401
