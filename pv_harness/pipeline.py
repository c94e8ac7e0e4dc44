"""`pv run TRAIT`: the main job end to end, resumable.

collect (pos and neg, judged) -> extract (vector file + report) -> steering sweep (layer choice)
-> graded-prompt monitoring (the paper's last-prompt-token experiment) -> `results.json` and
`report.html`, which lead with what was found.

Each inspect step is an `eval_set` in its own log folder under `--out`, so an interrupted run
picks up where it stopped and a finished step is never redone; extraction is skipped when the
vector file already comes from the same logs. A step counts as finished only when every one of its
logs has status `success` (inspect's eval_set can report success for an interrupted set). Every option
is checked before any work (`validate`), and the run folder keeps the options it was made with
(`run.json`): a rerun with other options stops and names them, and `fresh=True` moves the old folder aside.

Judging: with a `pv/` grader (by default the subject itself) the run judges in likelihood mode
(`pv_harness.scorers.likelihood`: no judge prompt, the model's own likelihoods of each answer under
the pos and neg persona prompts), with a filter and a layer rule that mean something for it; with
an API grader the paper's judge modes apply.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pv_harness.atomic import atomic_write_json
from pv_harness.errors import PvError
from pv_harness.logs import log_path, read_collection_log
from pv_harness.vectors.thresholds import (
    ABSOLUTE_FLOOR,
    DEFAULT_COHERENCE,
    DEFAULT_THRESHOLD,
    LIKELIHOOD_COHERENCE,
    RELATIVE_FLOOR,
)

if TYPE_CHECKING:
    from inspect_ai import Task
    from inspect_ai.model import Model
    from inspect_ai.util import DisplayType

LIKELIHOOD = "likelihood"
STEPS = ("collection", "extraction", "steering sweep", "monitoring", "results")
OPTIONS_FILE = "run.json"
NOT_OPTIONS = ("trait", "out", "display", "cache")  # the folder's name, where it is, and how the run looks or reuses


class RunInterrupted(RuntimeError, PvError):  # noqa: N818 - says what happened, like TooFewPairs
    """A step stopped by Ctrl-C (or a cancelled log); the same command resumes it."""

    def __init__(self, step: str) -> None:
        super().__init__(f"interrupted during {step} (step {STEPS.index(step) + 1}/{len(STEPS)}); "
                         "run the same command again to resume")
        self.step = step


class RunOptionsError(ValueError, PvError):
    """An option `pv run` cannot use, or a run folder made with other options."""


@dataclass
class RunConfig:
    trait: str
    model: str = "pv/smollm2"
    grader: str | Model | None = None  # default: the subject model
    n: int = 1  # answers per question and instruction (inspect epochs)
    limit: int | None = None  # collection samples per polarity (question x instruction); None = all
    max_tokens: int = 48
    temperature: float = 1.0
    out: Path = Path("pv-runs")
    threshold: float = DEFAULT_THRESHOLD
    coherence: float | None = None  # default: per judge (50 for a 0-100 judge, LIKELIHOOD_COHERENCE otherwise)
    filter: str = "paired"
    min_pairs: int = 3
    holdout: float = 0.2  # share of the extraction questions held out for the AUROCs
    extract_dtype: str | None = None  # the extraction model's dtype; None = float32 (the paper's vectors)
    layers: list[int] | None = None  # default: three layers spread over the middle of the model
    coefs: list[float] = field(default_factory=lambda: [-2.0, 0.0, 1.0, 2.0])
    sweep_questions: int = 10
    sweep_n: int = 1  # answers per question and setting
    coherence_floor: float | None = None  # default: per judge (ABSOLUTE_FLOOR, or RELATIVE_FLOOR x baseline)
    monitor_questions: int | None = None  # evaluation questions in the monitoring step (None = all)
    judge_mode: str | None = None  # default: likelihood for a pv/ grader, else auto
    likelihood_pairs: int | None = None  # default: the judge's own
    judge_min_mass: float = 0.25  # the paper's; only the 0-100 judges read it
    seed: int | None = None  # run seed: each sample gets its own seed from it (reproducible runs)
    model_args: dict[str, Any] = field(default_factory=dict)  # the pv/ model's -M args (device, dtype, ...)
    display: DisplayType | None = None
    cache: bool = False  # cache generations with inspect's cache policy

    @property
    def grader_name(self) -> str:
        return str(self.grader or self.model)

    @property
    def resolved_judge_mode(self) -> str:
        if self.judge_mode is not None:
            return self.judge_mode
        return LIKELIHOOD if self.grader_name.startswith("pv/") else "auto"

    @property
    def judge_free(self) -> bool:
        return self.resolved_judge_mode == LIKELIHOOD

    @property
    def coherence_threshold(self) -> float:
        if self.coherence is not None:
            return self.coherence
        return LIKELIHOOD_COHERENCE if self.judge_free else DEFAULT_COHERENCE

    @property
    def floor(self) -> float:
        if self.coherence_floor is not None:
            return self.coherence_floor
        return RELATIVE_FLOOR if self.judge_free else ABSOLUTE_FLOOR

    def options(self) -> dict[str, Any]:
        """The options that decide what the run folder holds, as run.json records them."""
        opts = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in NOT_OPTIONS}
        opts["grader"] = self.grader_name
        return json.loads(json.dumps(opts, default=str))

    def judge_args(self) -> dict[str, Any]:
        """The judge options every task of the run takes."""
        args: dict[str, Any] = {"judge_mode": self.resolved_judge_mode, "judge_min_mass": self.judge_min_mass}
        if self.likelihood_pairs is not None:
            args["likelihood_pairs"] = self.likelihood_pairs
        return args


@dataclass
class RunResult:
    out: Path
    vector: Path
    layer: int  # the monitored layer: the sweep's choice, else a swept layer (see layer_note)
    chosen: bool  # whether the sweep chose `layer` by its rule
    layer_note: str  # how `layer` was picked: the sweep's choice, or why there is none
    report: Path
    results: Path
    log_dir: Path
    pages: dict[str, Path]


def _eval_set(tasks: list[Task], log_dir: Path, cfg: RunConfig, step: str, **kwargs: Any) -> list:
    """Run one step's tasks; return their logs only when every one finished with status `success`."""
    from inspect_ai import eval_set

    grader = cfg.grader or cfg.model
    if cfg.model_args and cfg.grader is None:
        from inspect_ai.model import get_model

        grader = get_model(cfg.model, **cfg.model_args)  # the subject judging itself, on the same device
    if cfg.cache:
        kwargs["cache"] = True
    try:
        _, logs = eval_set(tasks, log_dir=str(log_dir), model=cfg.model, model_args=cfg.model_args,
                           model_roles={"grader": grader}, display=cfg.display, seed=cfg.seed, **kwargs)
    except KeyboardInterrupt:
        raise RunInterrupted(step) from None
    if len(logs) < len(tasks) or any(lg.status == "cancelled" for lg in logs):
        raise RunInterrupted(step)  # eval_set can return (True, []) after Ctrl-C
    failed = [lg for lg in logs if lg.status != "success"]
    if failed:
        errors = "; ".join(str(lg.error.message if lg.error else lg.status) for lg in failed)
        raise RuntimeError(f"{step} did not finish ({errors}); run the same command again to resume")
    return logs


def default_layers(num_layers: int) -> list[int]:
    return sorted({max(1, round(num_layers * f)) for f in (0.4, 0.55, 0.7)})


def _flag(option: str) -> str:
    return "-M" if option == "model_args" else "--" + option.replace("_", "-")


def _at_least(cfg: RunConfig, option: str, low: int, none_means: str | None = None) -> None:
    value = getattr(cfg, option)
    if value is None and none_means is not None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RunOptionsError(f"{_flag(option)} must be a whole number >= {low}"
                              + (f" ({none_means})" if none_means else "") + f", got {value!r}")


def model_layers(model: str) -> int:
    """The decoder blocks of a pv/ model, read from its config (no weights loaded)."""
    from pv_harness import models

    if not model.startswith("pv/"):
        raise RunOptionsError(f"--model {model}: pv run needs a pv/ model (the vectors need its activations); "
                              f"try --model pv/{model.partition('/')[2] or model}")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(models.local_path(model))
    except (OSError, ValueError) as ex:
        raise RunOptionsError(f"--model {model}: cannot read its config ({str(ex).splitlines()[0]})") from None
    return int(config.get_text_config().num_hidden_layers)


def validate(cfg: RunConfig) -> int:
    """Check every option before any work starts; return the model's number of decoder blocks."""
    from pv_harness import plugin_manager

    plugin_manager.get_trait(cfg.trait)
    for option in ("n", "max_tokens", "sweep_questions", "sweep_n", "min_pairs"):
        _at_least(cfg, option, 1)
    _at_least(cfg, "limit", 1, "or none for all; 0 = all on the command line")
    _at_least(cfg, "monitor_questions", 1, "or none for all")
    _at_least(cfg, "likelihood_pairs", 0, "or none for the judge's own; 0 = all")
    for option, low, high in (("holdout", 0.0, 1.0), ("judge_min_mass", 0.0, 1.0)):
        value = getattr(cfg, option)
        if not (math.isfinite(value) and low <= value <= high) or (option == "holdout" and value == high):
            raise RunOptionsError(f"{_flag(option)} must be between {low:g} and {high:g}"
                                  + (" (exclusive)" if option == "holdout" else "") + f", got {value!r}")
    if not math.isfinite(cfg.temperature) or cfg.temperature < 0:
        raise RunOptionsError(f"--temperature must be 0 or more, got {cfg.temperature!r}")
    if not cfg.coefs or not all(math.isfinite(c) for c in cfg.coefs):
        raise RunOptionsError(f"--coefs needs one or more finite numbers, e.g. -2,0,1,2; got {cfg.coefs!r}")
    num_layers = model_layers(cfg.model)
    if cfg.layers is not None:
        bad = [layer for layer in cfg.layers if not 0 <= layer <= num_layers]
        if not cfg.layers or bad:
            raise RunOptionsError(f"--layers {','.join(map(str, cfg.layers)) or '(empty)'}: {cfg.model} has layers "
                                  f"0..{num_layers} (l = output of decoder block l); give one or more of them")
    return num_layers


# Steps 1-4 (as in STEPS): each one's output (globs under the run folder) and the options it is made from beyond
# the steps before it (an option not named here counts as collection's).
STEP_OPTIONS = (
    (("logs/collect",), ("model", "grader", "n", "limit", "max_tokens", "temperature", "judge_mode", "likelihood_pairs",
                      "judge_min_mass", "seed", "model_args")),
    (("vectors",), ("threshold", "coherence", "filter", "min_pairs", "holdout", "extract_dtype")),
    (("logs/sweep", "vectors/*.layer.json"), ("layers", "coefs", "sweep_questions", "sweep_n")),
    (("logs/monitor",), ("coherence_floor", "monitor_questions")),
)


def _aside(out: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, k = out.with_name(f"{out.name}.old-{stamp}"), 1
    while aside.exists():
        k += 1
        aside = out.with_name(f"{out.name}.old-{stamp}-{k}")
    return aside


def prepare_folder(out: Path, cfg: RunConfig, fresh: bool = False, redo_changed: bool = False,
                   log: Callable[[str], None] = print) -> None:
    """Resume a run folder made with the same options, else refuse; record the options.

    `fresh` moves the whole folder aside; `redo_changed` moves aside only the output of the first step whose
    options changed and of every step after it, so the finished steps before it are kept.
    """
    path = out / OPTIONS_FILE
    options = cfg.options()
    if fresh and out.exists():
        aside = _aside(out)
        out.rename(aside)
        log(f"moved the old run folder aside: {aside}")
    elif path.exists():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        differ = [k for k in sorted(options.keys() | recorded.keys()) if options.get(k) != recorded.get(k)]
        if differ and redo_changed:
            first = min(next((i for i, (_, names) in enumerate(STEP_OPTIONS) if k in names), 0) for k in differ)
            aside = _aside(out)
            for globs, _ in STEP_OPTIONS[first:]:
                for found in [p for g in globs for p in out.glob(g)]:
                    target = aside / found.relative_to(out)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    found.rename(target)
            log(f"options changed ({', '.join(map(_flag, differ))}): redoing from {STEPS[first]}; the old output "
                f"of that step and the later ones is in {aside}")
        elif differ:
            changed = "; ".join(f"{_flag(k)} {recorded.get(k)!r} -> {options.get(k)!r}" for k in differ)
            raise RunOptionsError(f"{out} was made with other options ({changed}): rerun with the same options to "
                                  "resume, add --redo-changed to redo only the steps they change, or --fresh to move "
                                  "that folder aside and start again")
    atomic_write_json(path, options)


@dataclass
class _Progress:
    step: str = STEPS[0]


def run(cfg: RunConfig, log: Callable[[str], None] = print, fresh: bool = False,
        redo_changed: bool = False) -> RunResult:
    """Run every step, resuming a folder made with the same options (see `prepare_folder` for the flags)."""
    from pv_harness import models

    num_layers = validate(cfg)
    out = Path(cfg.out) / f"{cfg.trait}-{models.slug(cfg.model)}"
    prepare_folder(out, cfg, fresh, redo_changed, log)
    progress = _Progress()
    try:
        return _run(cfg, out, num_layers, log, progress)
    except KeyboardInterrupt:
        raise RunInterrupted(progress.step) from None


def _run(cfg: RunConfig, out: Path, num_layers: int, log: Callable[[str], None], progress: _Progress) -> RunResult:
    from pv_harness.reports.monitor import (
        layer_correlations,
        monitor_frame,
        write_monitor_csv,
        write_prompt_monitor_report,
    )
    from pv_harness.reports.paper_csv import export_csv
    from pv_harness.reports.results import build_results, finding_lines, write_results
    from pv_harness.reports.sweep import sweep_frame, write_sweep_csv, write_sweep_report
    from pv_harness.tasks.persona import persona_collect
    from pv_harness.tasks.prompt_monitor import prompt_monitor
    from pv_harness.tasks.steering_sweep import steering_sweep
    from pv_harness.vectors.extraction import extract_from_logs
    from pv_harness.vectors.files import read_vectors

    started = time.monotonic()
    logs_root = out / "logs"
    pages: dict[str, Path] = {}
    note = judge_note(cfg)
    if note is not None:
        log(f"note: {note}")
    judge = cfg.judge_args()

    log(f"[1/5] collecting pos and neg answers for {cfg.trait!r} with {cfg.model} "
        f"(judge: {judge_label(cfg)})")
    collect = [persona_collect(trait=cfg.trait, polarity=p, n_per_question=cfg.n, max_tokens=cfg.max_tokens,
                               temperature=cfg.temperature, **judge) for p in ("pos", "neg")]
    collect_logs = _eval_set(collect, logs_root / "collect", cfg, "collection", limit=cfg.limit)
    sources = sorted(log_path(lg.location) for lg in collect_logs)
    export_csv(sources, out / f"{cfg.trait}.collection.csv")

    vector = out / "vectors" / f"{cfg.trait}.safetensors"
    progress.step = "extraction"
    existing = read_vectors(vector).metadata if vector.exists() else {}
    if sources and sorted(existing.get("source_logs", [])) == sources:
        log(f"[2/5] vectors up to date: {vector}")
    else:
        log("[2/5] extracting persona vectors")
        extract_from_logs(sources, model=cfg.model, out=vector, device=cfg.model_args.get("device"),
                          dtype=cfg.extract_dtype or "float32",
                          threshold=cfg.threshold, coherence=cfg.coherence_threshold, mode=cfg.filter,
                          min_pairs=cfg.min_pairs, holdout=cfg.holdout, log=log)
    pages["extraction"] = vector.with_suffix(".report.html")
    meta = read_vectors(vector).metadata

    progress.step = "steering sweep"
    layers = cfg.layers or default_layers(num_layers)
    log(f"[3/5] steering sweep: layers {layers} x coefs {cfg.coefs} x {cfg.sweep_questions} questions "
        f"x {cfg.sweep_n} answers")
    sweep = steering_sweep(trait=cfg.trait, vector=str(vector), layers=layers, coefs=cfg.coefs,
                           questions=cfg.sweep_questions, n_per_question=cfg.sweep_n, max_tokens=cfg.max_tokens,
                           temperature=cfg.temperature, **judge)
    (sweep_log,) = _eval_set([sweep], logs_root / "sweep", cfg, "steering sweep")
    sweep_path = log_path(sweep_log.location)
    frame, _ = sweep_frame(sweep_path)
    sweep_page, choice, _ = write_sweep_report(sweep_path, out / "sweep.html", floor=cfg.floor,
                                               relative=cfg.judge_free)
    pages["steering sweep"] = sweep_page
    if choice is not None:
        layer = choice.layer
        layer_note = f"layer {layer}, chosen by the sweep: coef {choice.coef:g} gave {choice.rule}"
        log(f"      chosen layer {layer} (coef {choice.coef:g})")
    else:
        from pv_harness.reports.sweep import summarise, why_none

        layer, by_auroc = fallback_layer(meta["diagnostics"], layers)
        reason = why_none(summarise(frame), cfg.floor, cfg.judge_free)
        layer_note = (f"no layer chosen: {reason}; monitored at swept layer {layer}"
                      + (" (the best held-out AUROC of the swept layers)" if by_auroc else " (the middle one swept)"))
        log(f"      {layer_note}")

    progress.step = "monitoring"
    log(f"[4/5] monitoring at layer {layer} (and the other swept layers): pos, neg and no persona prompt x the "
        "evaluation questions")
    monitor = prompt_monitor(trait=cfg.trait, vector=str(vector.resolve()), layer=layer, compare_layers=layers,
                             questions=cfg.monitor_questions, max_tokens=cfg.max_tokens,
                             temperature=cfg.temperature, **judge)
    (monitor_log,) = _eval_set([monitor], logs_root / "monitor", cfg, "monitoring")
    monitor_path = log_path(monitor_log.location)
    monitor_data = monitor_frame(monitor_path)  # read once: the page, the CSV and the per-layer r
    pages["monitoring"], monitor_r = write_prompt_monitor_report(monitor_path, out / "monitor.html", monitor_data)

    progress.step = "results"
    log("[5/5] results")
    files = {"collection (paper CSV)": out / f"{cfg.trait}.collection.csv",
             "sweep.csv": write_sweep_csv(frame, out / "sweep.csv"),
             "monitor.csv": write_monitor_csv(monitor_path, out / "monitor.csv", monitor_data)}
    results = build_results(trait=cfg.trait, model=cfg.model, judge=judge_label(cfg), meta=meta, layer=layer,
                            choice=choice, frame=frame, monitor_r=monitor_r,
                            monitor_by_layer=layer_correlations(monitor_path, monitor_data),
                            collection=[read_collection_log(p) for p in sources], seconds=time.monotonic() - started)
    files["results.json"] = write_results(out / "results.json", results)
    report = write_run_report(out, cfg, vector, layer_note, results, pages, files, logs_root, sweep_path)
    for line in finding_lines(results):
        log(f"      {line}")
    return RunResult(out=out, vector=vector, layer=layer, chosen=choice is not None, layer_note=layer_note,
                     report=report, results=files["results.json"], log_dir=logs_root, pages=pages)


def judge_label(cfg: RunConfig) -> str:
    """The judge as results and pages name it: the model, and the likelihood mode when it is judge-free."""
    return f"{cfg.grader_name} (likelihood)" if cfg.judge_free else cfg.grader_name


def judge_note(cfg: RunConfig) -> str | None:
    """What the user must know about this run's scores (the likelihood judge's reading, or a weak grader)."""
    from pv_harness.scorers.judge import weak_grader_note
    from pv_harness.scorers.likelihood import likelihood_note

    return likelihood_note(cfg.grader_name) if cfg.judge_free else weak_grader_note(cfg.grader_name)


def fallback_layer(diagnostics: list[dict], swept: list[int]) -> tuple[int, bool]:
    """The layer to monitor when the sweep chose none: a layer it tried, never one it skipped.

    The swept layer with the best held-out (text-only) AUROC (and True), else the middle swept layer (and False).
    """
    scored = [r for r in diagnostics if r["layer"] in swept
              and isinstance(r.get("heldout_auroc"), float) and math.isfinite(r["heldout_auroc"])]
    if scored:
        return int(max(scored, key=lambda r: r["heldout_auroc"])["layer"]), True
    return swept[len(swept) // 2], False


def write_run_report(out: Path, cfg: RunConfig, vector: Path, layer_note: str, results: dict[str, Any],
                     pages: dict[str, Path], files: dict[str, Path], logs_root: Path, sweep_log: str) -> Path:
    """The page that leads with what the run found and links everything it wrote."""
    from pv_harness.reports.results import example_answers
    from pv_harness.reports.run import write_run_page
    from pv_harness.vectors.files import read_vectors

    return write_run_page(out, results=results, layer_note=layer_note, vector=vector,
                          vector_meta=read_vectors(vector).metadata, examples=example_answers(sweep_log),
                          pages=pages, files=files, logs_root=logs_root, judge_note=judge_note(cfg))
