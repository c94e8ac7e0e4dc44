"""`pv run TRAIT`: the main job end to end, resumable.

collect (pos and neg, judged) -> extract (vector file + report) -> steering sweep (layer choice)
-> monitored detection example -> `report.html` linking every page.

Each inspect step is an `eval_set` in its own log folder under `--out`, so an interrupted run
picks up where it stopped and a finished step is never redone; extraction is skipped when the
vector file already comes from the same logs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pv_harness.logs import CollectionLog, log_path, read_collection_log
from pv_harness.vectors.thresholds import DEFAULT_COHERENCE, DEFAULT_THRESHOLD

if TYPE_CHECKING:
    from inspect_ai import Task
    from inspect_ai.model import Model
    from inspect_ai.util import DisplayType

@dataclass
class RunConfig:
    trait: str
    model: str = "pv/smollm2"
    grader: str | Model | None = None  # default: the subject model
    n: int = 1  # answers per question and instruction (inspect epochs)
    limit: int | None = 10  # collection samples per polarity (question x instruction); None = all
    max_tokens: int = 64
    temperature: float = 1.0
    out: Path = Path("pv-runs")
    threshold: float = DEFAULT_THRESHOLD
    coherence: float = DEFAULT_COHERENCE
    filter: str = "paired"
    min_pairs: int = 3
    layers: list[int] | None = None  # default: three layers spread over the middle of the model
    coefs: list[float] = field(default_factory=lambda: [0.0, 2.0, 4.0])
    sweep_questions: int = 3
    coherence_floor: float = 75.0
    monitor_samples: int = 3
    judge_mode: str = "auto"
    judge_min_mass: float = 0.25  # the paper's; a tiny local judge needs less (see `pv run --help`)
    seed: int | None = None  # sampling seed for every generation (reproducible runs)
    display: DisplayType | None = None


@dataclass
class RunResult:
    out: Path
    vector: Path
    layer: int
    layer_note: str  # how `layer` was picked: the sweep's choice, or why there is none
    report: Path
    log_dir: Path
    pages: dict[str, Path]


def _eval_set(tasks: list[Task], log_dir: Path, cfg: RunConfig, step: str, **kwargs) -> list:
    from inspect_ai import eval_set

    success, logs = eval_set(tasks, log_dir=str(log_dir), model=cfg.model,
                             model_roles={"grader": cfg.grader or cfg.model}, display=cfg.display, seed=cfg.seed,
                             **kwargs)
    if not success:
        errors = "; ".join(str(lg.error.message if lg.error else lg.status) for lg in logs if lg.status != "success")
        raise RuntimeError(f"{step} did not finish ({errors}); run the same command again to resume")
    return logs


def default_layers(num_layers: int) -> list[int]:
    return sorted({max(1, round(num_layers * f)) for f in (0.4, 0.55, 0.7)})


def run(cfg: RunConfig, log: Callable[[str], None] = print) -> RunResult:
    from pv_harness import models, plugin_manager
    from pv_harness.reports.monitor import write_monitor_report
    from pv_harness.reports.sweep import write_sweep_report
    from pv_harness.scorers.judge import weak_grader_note
    from pv_harness.tasks.persona import persona_collect, trait_eval
    from pv_harness.tasks.steering_sweep import steering_sweep
    from pv_harness.vectors.extraction import extract_from_logs
    from pv_harness.vectors.files import read_vectors

    plugin_manager.get_trait(cfg.trait)  # unknown trait: fail before anything runs
    out = Path(cfg.out) / f"{cfg.trait}-{models.slug(cfg.model)}"
    logs_root = out / "logs"
    pages: dict[str, Path] = {}
    grader = str(cfg.grader or cfg.model)
    weak = weak_grader_note(grader)
    if weak is not None:
        log(f"note: {weak}")

    log(f"[1/4] collecting pos and neg answers for {cfg.trait!r} with {cfg.model} (judge: {grader})")
    collect = [persona_collect(trait=cfg.trait, polarity=p, n_per_question=cfg.n, max_tokens=cfg.max_tokens,
                               temperature=cfg.temperature, judge_mode=cfg.judge_mode,
                               judge_min_mass=cfg.judge_min_mass) for p in ("pos", "neg")]
    collect_logs = _eval_set(collect, logs_root / "collect", cfg, "collection", limit=cfg.limit)
    sources = sorted(log_path(lg.location) for lg in collect_logs)

    vector = out / "vectors" / f"{cfg.trait}.safetensors"
    existing = read_vectors(vector).metadata if vector.exists() else {}
    if sorted(existing.get("source_logs", [])) == sources:
        log(f"[2/4] vectors up to date: {vector}")
    else:
        log("[2/4] extracting persona vectors")
        extract_from_logs(sources, model=cfg.model, out=vector, threshold=cfg.threshold, coherence=cfg.coherence,
                          mode=cfg.filter, min_pairs=cfg.min_pairs, log=log)
    pages["extraction"] = vector.with_suffix(".report.html")
    meta = read_vectors(vector).metadata
    num_layers = len(meta["diagnostics"]) - 1

    layers = cfg.layers or default_layers(num_layers)
    log(f"[3/4] steering sweep: layers {layers} x coefs {cfg.coefs} x {cfg.sweep_questions} questions")
    sweep = steering_sweep(trait=cfg.trait, vector=str(vector), layers=layers, coefs=cfg.coefs,
                           questions=cfg.sweep_questions, max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                           judge_mode=cfg.judge_mode, judge_min_mass=cfg.judge_min_mass)
    (sweep_log,) = _eval_set([sweep], logs_root / "sweep", cfg, "steering sweep")
    sweep_page, choice, _ = write_sweep_report(log_path(sweep_log.location), out / "sweep.html",
                                               floor=cfg.coherence_floor)
    pages["steering sweep"] = sweep_page
    if choice is not None:
        layer = choice.layer
        layer_note = (f"layer {layer}, chosen by the sweep: coef {choice.coef:g} gave the highest mean trait score "
                      f"with mean coherence >= {cfg.coherence_floor:g}")
        log(f"      chosen layer {layer} (coef {choice.coef:g})")
    else:
        layer, by_auroc = fallback_layer(meta["diagnostics"], layers)
        layer_note = (f"no layer chosen: no steered setting kept mean coherence >= {cfg.coherence_floor:g}; "
                      f"monitored at swept layer {layer}"
                      + (" (the best held-out AUROC of the swept layers)" if by_auroc else " (the middle one swept)"))
        log(f"      {layer_note}")

    log(f"[4/4] monitored detection example at layer {layer}")
    monitor = {"pv": {"monitor": [{"vector": str(vector.resolve()), "layer": layer}]}}
    example = trait_eval(trait=cfg.trait, n_per_question=1, max_tokens=cfg.max_tokens,
                         temperature=cfg.temperature, judge_mode=cfg.judge_mode, judge_min_mass=cfg.judge_min_mass)
    (monitor_log,) = _eval_set([example], logs_root / "monitor", cfg, "monitored example",
                               limit=cfg.monitor_samples, extra_body=monitor)
    pages["token monitor"] = write_monitor_report(log_path(monitor_log.location), out / "monitor.html")

    report = write_run_report(out, cfg, vector, layer_note, pages, logs_root, grader,
                              [read_collection_log(p) for p in sources])
    return RunResult(out=out, vector=vector, layer=layer, layer_note=layer_note, report=report, log_dir=logs_root,
                     pages=pages)


def fallback_layer(diagnostics: list[dict], swept: list[int]) -> tuple[int, bool]:
    """The layer to monitor when the sweep chose none: a layer it tried, never one it skipped.

    The swept layer with the best held-out AUROC (and True), else the middle swept layer (and False).
    """
    scored = [r for r in diagnostics if r["layer"] in swept
              and isinstance(r.get("heldout_auroc"), float) and math.isfinite(r["heldout_auroc"])]
    if scored:
        return int(max(scored, key=lambda r: r["heldout_auroc"])["layer"]), True
    return swept[len(swept) // 2], False


def write_run_report(out: Path, cfg: RunConfig, vector: Path, layer_note: str, pages: dict[str, Path], logs_root: Path,
                     grader: str, collect_logs: list[CollectionLog]) -> Path:
    """The page that links everything a run produced."""
    from pv_harness.reports.run import write_run_page
    from pv_harness.scorers.judge import weak_grader_note
    from pv_harness.vectors.files import read_vectors

    meta = read_vectors(vector).metadata
    collection = [{"polarity": str(lg.polarity), "trait": lg.summary("trait").mean,
                   "coherence": lg.summary("coherence").mean} for lg in collect_logs]
    weak = weak_grader_note(grader)
    return write_run_page(out, trait=cfg.trait, model=cfg.model, grader=grader, vector=vector, layer_note=layer_note,
                          vector_meta=meta, collection=collection, pages=pages, logs_root=logs_root,
                          weak_judge_note=weak)
