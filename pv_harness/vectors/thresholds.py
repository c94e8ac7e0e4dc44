"""The effective-pair filter's default thresholds (the paper's code: pos trait >= 50, neg trait < 50,
coherence >= 50), in a module of their own so `pv extract --help` can show them without loading torch."""

from __future__ import annotations

DEFAULT_THRESHOLD = 50.0
DEFAULT_COHERENCE = 50.0

# The judge modes (see `pv_harness.scorers.judge`), here so that `pv run --help` lists them without loading inspect.
JUDGE_MODES = ("auto", "logprob", "continuation", "text", "likelihood")

# The likelihood judge's coherence is 100 x the answer's geometric-mean token probability: 2 keeps answers whose
# tokens the model gives 2% on average (mean log p >= -3.9) and drops the word salad below that.
LIKELIHOOD_COHERENCE = 2.0
ABSOLUTE_FLOOR = 75.0  # the sweep's coherence floor for a 0-100 judge
# for the likelihood judge, a fraction of the unsteered baseline's mean coherence: steered answers' tokens at least
# half as likely on average (mean log p at most 0.69 lower) as the unsteered answers' under the unsteered model
RELATIVE_FLOOR = 0.5
