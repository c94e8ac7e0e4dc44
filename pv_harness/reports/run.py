"""The page `pv run` ends with: what it found, and a link to every page and log it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pv_harness.reports.pages import write_page


def write_run_page(out: Path, *, trait: str, model: str, grader: str, vector: Path, layer_note: str,
                   vector_meta: dict[str, Any], collection: list[dict[str, Any]], pages: dict[str, Path],
                   logs_root: Path, weak_judge_note: str | None = None) -> Path:
    """`out/report.html`. `collection`: per polarity, the mean `trait` and `coherence` (None when unscored);
    `layer_note`: the layer and how it was picked (the sweep's choice, or why there is none);
    `weak_judge_note`: a warning the caller shows when it judges the grader too weak to trust."""
    return write_page(out / "report.html", "run.html", trait=trait, model=model, grader=grader, vector=vector,
                      layer_note=layer_note, pos_samples=vector_meta["pos_samples"],
                      neg_samples=vector_meta["neg_samples"], filter=vector_meta["filter"], collection=collection,
                      links={name: path.relative_to(out) for name, path in pages.items()}, logs_root=logs_root,
                      weak_judge_note=weak_judge_note)
