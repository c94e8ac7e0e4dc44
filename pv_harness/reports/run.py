"""The page `pv run` ends with: what it found first, then every page, file and log it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pv_harness.reports.pages import write_page


def write_run_page(out: Path, *, results: dict[str, Any], layer_note: str, vector: Path, vector_meta: dict[str, Any],
                   examples: list[dict[str, Any]], pages: dict[str, Path], files: dict[str, Path], logs_root: Path,
                   judge_note: str | None = None) -> Path:
    """`out/report.html`. `results`: the `results.json` dict (see `pv_harness.reports.results`); `layer_note`:
    the layer and how it was picked; `examples`: answers per swept setting; `judge_note`: what the judge's
    numbers mean, or a warning about a weak grader."""
    from pv_harness.reports.results import finding_lines

    def relative(path: Path) -> Path:
        return path.relative_to(out) if path.is_relative_to(out) else path

    return write_page(out / "report.html", "run.html", results=results, findings=finding_lines(results),
                      layer_note=layer_note, vector=vector, pos_samples=vector_meta["pos_samples"],
                      neg_samples=vector_meta["neg_samples"], filter=vector_meta["filter"], examples=examples,
                      links={name: relative(path) for name, path in pages.items()},
                      files={name: relative(path) for name, path in files.items()}, logs_root=logs_root,
                      judge_note=judge_note)
