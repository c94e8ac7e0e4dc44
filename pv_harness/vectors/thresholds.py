"""The effective-pair filter's default thresholds (the paper's code: pos trait >= 50, neg trait < 50,
coherence >= 50), in a module of their own so `pv extract --help` can show them without loading torch."""

from __future__ import annotations

DEFAULT_THRESHOLD = 50.0
DEFAULT_COHERENCE = 50.0
