"""What inspect imports through the `inspect_ai` entry point: our tasks and model provider.

Keep this module cheap to import: heavy libraries (torch, transformers) load inside factories.
"""

from pv_harness.provider.api import pv  # noqa: F401
from pv_harness.scorers.judge import coherence_judge, trait_judge  # noqa: F401
from pv_harness.scorers.metrics import grouped_judge_stats, judge_stats  # noqa: F401
from pv_harness.scorers.projection import projection  # noqa: F401
from pv_harness.solvers.preflight import preflight  # noqa: F401
from pv_harness.tasks.persona import (  # noqa: F401
    evil_detection,
    hallucinating_detection,
    persona_collect,
    sycophantic_detection,
    trait_eval,
)
from pv_harness.tasks.prompt_monitor import prompt_monitor  # noqa: F401
from pv_harness.tasks.steering_sweep import steering_sweep  # noqa: F401
