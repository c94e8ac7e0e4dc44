"""Model-organism experiments: a YAML config, then `train`, `status`, `evaluate`, `results` as separate steps.

    name: evil-organisms
    models:
      - {name: evil_baseline, dataset: collected, trait: evil, strength: baseline}
      - {name: evil_severe, dataset: collected, trait: evil, strength: severe, suffix: evil-sev}
    training:
      base_model: pv/smollm2
      backend: local                     # local | openai | tinker | dummy | a plugin's
      hyperparameters: {epochs: 1, learning_rate: 1e-4}
      dataset_kwargs: {sample_size: 20, seed: 0}
    evaluation:
      tasks: [evil, sycophantic]         # trait names or <trait>_detection
      grader: pv/smollm2
      judge_mode: likelihood             # as in `collect:`; auto | logprob | continuation | text | likelihood
      limit: 5
      n: 1

Every step is cached by a content hash of its config and inputs (the training examples themselves, vector
file contents) in `<out>/state.json`, written atomically: a rerun redoes nothing, a changed config or
dataset retrains only what changed, and a failed or cancelled job is never reused (it is resubmitted).
Evaluation is one inspect `eval_set` (every model x every detection task) in `<out>/eval/<hash>`, so an
interrupted evaluation resumes. Relative paths in the config are relative to the config file.

Loading the config checks every option before any step runs (traits and detection tasks installed, the backend
and dataset sources registered, counts positive, files present), one line per problem naming the field. `train`
builds every dataset before the first job; a job that fails is recorded and the others still run, and
`failures` names each failed one with its log.

One judge, the `grader` model role, scores collection and evaluation: `evaluation.grader`, else the base model.
`judge_mode` (in `collect:` and `evaluation:`) says how it scores; `likelihood` uses that model's own
likelihoods, so the judge must be a pv/ model, and by default it is the base model: an organism never judges
its own answers.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from pv_harness.atomic import atomic_write_json, path_component
from pv_harness.errors import PvError
from pv_harness.organisms.training import (
    STRENGTHS,
    Job,
    JobState,
    TrainingBackend,
    TrainingRequest,
    content_hash,
    file_hash,
    get_backend,
    load_dataset,
    training_backends,
    training_datasets,
)
from pv_harness.vectors.files import DEFAULT_KIND, VECTOR_KINDS

if TYPE_CHECKING:
    from inspect_ai.util import DisplayType

Strength = Literal["baseline", "mild", "severe"]
STATE_FILE = "state.json"
STATE_SECTIONS = ("models", "collect", "evaluate", "shift")


class ExperimentError(ValueError, PvError):
    """A config that does not validate, or a step that cannot run yet."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_judge_mode(mode: str) -> str:
    from pv_harness.scorers.judge import JUDGE_MODES

    if mode not in JUDGE_MODES:
        raise ValueError(f"must be one of {', '.join(JUDGE_MODES)}; got {mode!r}")
    return mode


def _installed_trait(name: str) -> str:
    """A trait some installed plugin registers (checked at load, before any step runs)."""
    from pv_harness import plugin_manager

    found = plugin_manager.collected(plugin_manager.TRAITS)
    if name in found.clashes:
        raise ValueError(found.clashes[name])
    if name not in found.named:
        raise ValueError(f"trait {name!r} is not installed (pv traits list shows the installed traits)")
    return name


def _detection_task(task: str) -> str:
    """`evil`, `evil_detection` or `pv_harness/evil_detection` -> the installed trait `evil`."""
    from pv_harness import plugin_manager

    trait = task.removeprefix("pv_harness/").removesuffix("_detection")
    found = plugin_manager.collected(plugin_manager.TRAITS)
    if trait in found.clashes:
        raise ValueError(found.clashes[trait])
    if trait not in found.named:
        raise ValueError(f"unknown detection task {task!r}; installed: {', '.join(found.named) or '(none)'} "
                         "(each also as <trait>_detection)")
    return trait


def _known_backend(name: str) -> str:
    if name not in training_backends():
        raise ValueError(f"unknown training backend {name!r}; installed: {', '.join(training_backends())}")
    return name


def _known_dataset(name: str) -> str:
    if name not in training_datasets():
        raise ValueError(f"unknown training dataset {name!r}; installed: {', '.join(training_datasets())}")
    return name


def _config_file(value: str, info: ValidationInfo) -> Path:
    """A file named in the config, relative to the config's folder (the `root` in the validation context)."""
    path = Path(value).expanduser()
    root = (info.context or {}).get("root")
    return path if path.is_absolute() or root is None else Path(root) / path


class DatasetOptions(BaseModel):
    """The dataset options every source shares, checked; a source's own options pass through."""

    model_config = ConfigDict(extra="allow")

    sample_size: int | None = Field(default=None, ge=1)
    seed: int = 0
    mild_fraction: float = Field(default=0.5, ge=0, le=1)
    coherence: float = 0.0
    threshold: float | Literal["auto"] = 50.0


def _dataset_options(options: dict[str, Any]) -> dict[str, Any]:
    DatasetOptions.model_validate(options)  # the errors name dataset_kwargs.<option>; the values stay as written
    return options


class SteeringEntry(BaseModel):
    """One preventative-steering entry: the keys `pv/` steering takes, a vector file that exists."""

    model_config = ConfigDict(extra="forbid")

    vector: str | list[float]
    layer: int = Field(ge=0)
    coef: float | None = None
    op: Literal["add", "ablate"] = "add"
    positions: Literal["all", "prompt", "response"] = "response"
    kind: str = DEFAULT_KIND

    @field_validator("vector")
    @classmethod
    def _exists(cls, vector: str | list[float], info: ValidationInfo) -> str | list[float]:
        if isinstance(vector, str) and not _config_file(vector, info).is_file():
            raise ValueError(f"no vector file {_config_file(vector, info)}")
        return vector

    @field_validator("kind")
    @classmethod
    def _kind(cls, kind: str) -> str:
        if kind not in VECTOR_KINDS:
            raise ValueError(f"must be one of {', '.join(VECTOR_KINDS)}; got {kind!r}")
        return kind

    @model_validator(mode="after")
    def _coef(self) -> SteeringEntry:
        if self.op == "add" and self.coef is None:
            raise ValueError("a steering entry with op 'add' needs a coef")
        return self


def _steering_entry(entry: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    SteeringEntry.model_validate(entry, context=info.context)  # the errors name steering.<i>.<key>
    return entry


DatasetKwargs = Annotated[dict[str, Any], AfterValidator(_dataset_options)]


class ModelEntry(_Strict):
    name: str = Field(min_length=1)
    dataset: Annotated[str, AfterValidator(_known_dataset)] = "collected"
    trait: Annotated[str, AfterValidator(_installed_trait)]
    strength: Strength
    suffix: str | None = None
    dataset_kwargs: DatasetKwargs = Field(default_factory=dict)

    _name = field_validator("name")(path_component)


class TrainingConfig(_Strict):
    base_model: str
    backend: Annotated[str, AfterValidator(_known_backend)] = "local"
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    dataset_kwargs: DatasetKwargs = Field(default_factory=dict)
    # preventative steering while training
    steering: list[Annotated[dict[str, Any], AfterValidator(_steering_entry)]] = Field(default_factory=list)
    poll_seconds: float = Field(default=30.0, gt=0)


class CollectConfig(_Strict):
    """Build `collected` datasets here first: persona_collect (pos and neg) with the base model."""

    limit: int | None = Field(default=10, ge=1)
    n: int = Field(default=1, ge=1)
    max_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=1.0, ge=0)
    judge_mode: str = "auto"
    judge_min_mass: float = Field(default=0.25, ge=0, le=1)
    seed: int | None = 0

    _judge_mode = field_validator("judge_mode")(_check_judge_mode)


class EvaluationConfig(_Strict):
    tasks: list[Annotated[str, AfterValidator(_detection_task)]] = Field(min_length=1)  # as trait names
    grader: str | None = None  # default: the base model
    limit: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1)
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=1.0, ge=0)
    judge_mode: str = "auto"
    judge_min_mass: float = Field(default=0.25, ge=0, le=1)
    include_base: bool = False
    seed: int | None = 0

    _judge_mode = field_validator("judge_mode")(_check_judge_mode)


class ShiftConfig(_Strict):
    # trait -> vector file, or `collected` (extracted from this experiment's collection)
    vectors: dict[Annotated[str, AfterValidator(_installed_trait)], str]
    extract: dict[str, Any] = Field(default_factory=lambda: {"threshold": 0, "coherence": 0, "min_pairs": 3})
    layer: int | None = Field(default=None, ge=0)
    random_directions: int = Field(default=20, ge=1)
    seed: int = 0

    @field_validator("vectors")
    @classmethod
    def _files(cls, vectors: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        for trait, vector in vectors.items():
            if vector != "collected" and not _config_file(vector, info).is_file():
                raise ValueError(f"{trait}: no vector file {_config_file(vector, info)} (a file, or `collected`)")
        return vectors


class ExperimentConfig(_Strict):
    name: str
    out: str | None = None
    models: list[ModelEntry] = Field(min_length=1)
    training: TrainingConfig
    evaluation: EvaluationConfig
    collect: CollectConfig | None = None
    shift: ShiftConfig | None = None

    _name = field_validator("name")(path_component)

    @model_validator(mode="after")
    def _unique(self) -> ExperimentConfig:
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model names must be unique; repeated: {dup}")
        return self

    @property
    def grader(self) -> str:
        """The judge of every step: `evaluation.grader`, else the base model (never a trained organism)."""
        return self.evaluation.grader or self.training.base_model

    @model_validator(mode="after")
    def _likelihood_judge(self) -> ExperimentConfig:
        from pv_harness.scorers.judge import LIKELIHOOD, is_pv_model

        for section in ("collect", "evaluation"):
            part = getattr(self, section)
            if part is not None and part.judge_mode == LIKELIHOOD and not is_pv_model(self.grader):
                raise ValueError(f"{section}.judge_mode likelihood scores with a pv/ model's own likelihoods, but the "
                                 f"judge is {self.grader!r}: set evaluation.grader to a pv/ model (the base model "
                                 "the organisms come from), or use another judge_mode")
        return self


def load_config(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as ex:
        raise ExperimentError(f"cannot read {path}: {ex}") from ex
    try:
        return ExperimentConfig.model_validate(data or {}, context={"root": path.parent})
    except ValidationError as ex:
        raise ExperimentError("\n".join(f"{path}: {_describe(error)}" for error in ex.errors())) from ex


def _describe(error: ErrorDetails) -> str:
    """One pydantic error as `field.path: what is wrong` (no field for a check across fields)."""
    where = ".".join(str(part) for part in error["loc"] if part != "[key]")  # a dict key's error: the key
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


class Experiment:
    def __init__(self, config_path: str | Path, *, out: str | Path | None = None,
                 log: Callable[[str], None] = print, display: DisplayType | None = None,
                 grader_model: Any = None) -> None:
        """`grader_model` (an inspect Model) replaces the configured grader when evaluating (tests, custom judges)."""
        self.path = Path(config_path).resolve()
        self.root = self.path.parent
        self.cfg = load_config(self.path)
        self.log = log
        self.display = display
        self.grader_model = grader_model
        if out is not None:
            self.out = Path(out).resolve()
        elif self.cfg.out:
            self.out = self._path(self.cfg.out)
        else:
            self.out = Path("pv-experiments").resolve() / self.cfg.name
        self.state_path = self.out / STATE_FILE
        self.state = self._read_state()

    # ---- state --------------------------------------------------------------------------------------

    def _path(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else (self.root / path).resolve()

    def _read_state(self) -> dict[str, Any]:
        if not self.state_path.is_file():
            return {section: {} for section in STATE_SECTIONS}
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as ex:
            raise self._corrupt(f"not valid JSON: {ex}") from ex
        problem = _state_problem(state)
        if problem:
            raise self._corrupt(problem)
        for section in STATE_SECTIONS:
            state.setdefault(section, {})
        return state

    def _corrupt(self, why: str) -> ExperimentError:
        return ExperimentError(f"{self.state_path} is corrupt ({why}); delete it to start the experiment fresh "
                               "(finished training outputs stay on disk, but every step reruns)")

    def _save(self) -> None:
        atomic_write_json(self.state_path, self.state)

    @property
    def grader(self) -> str:
        return self.cfg.grader

    def _roles(self, judge_mode: str) -> dict[str, Any]:
        """The grader role of a step. The likelihood judge scores with the grader only when it is pv/ (else with
        the evaluated model, an organism judging itself), so no other stand-in may replace it."""
        from pv_harness.scorers.judge import LIKELIHOOD, is_pv_model

        grader = self.grader_model or self.grader
        if judge_mode == LIKELIHOOD and not is_pv_model(grader):
            raise ExperimentError(f"judge_mode likelihood scores with a pv/ model; the grader given is {grader}: "
                                  "pass a pv/ grader_model, or none (the config's grader)")
        return {"grader": grader}

    # ---- collect --------------------------------------------------------------------------------------

    def _needs_collection(self, m: ModelEntry) -> bool:
        kwargs = {**self.cfg.training.dataset_kwargs, **m.dataset_kwargs}
        return m.dataset == "collected" and not kwargs.get("log_dir") and not kwargs.get("logs")

    def collect(self) -> dict[str, str]:
        """Run persona_collect for each trait whose `collected` dataset has no logs given (resumable)."""
        traits = sorted({m.trait for m in self.cfg.models if self._needs_collection(m)})
        if not traits:
            return {}
        if self.cfg.collect is None:
            raise ExperimentError("models use dataset 'collected' without dataset_kwargs.log_dir: give log_dir, "
                                  "or add a `collect:` section to collect answers with the base model first")
        from inspect_ai import eval_set

        from pv_harness.tasks.persona import persona_collect

        c = self.cfg.collect
        settings = c.model_dump()
        if settings["judge_mode"] == "auto":  # the default keeps the keys of collections made before the option
            del settings["judge_mode"]
        dirs = {}
        for trait in traits:
            key = content_hash("collect", settings, trait, self.cfg.training.base_model, self.grader)
            log_dir = self.out / "collect" / f"{trait}-{key[:10]}"
            dirs[trait] = str(log_dir)
            if self.state["collect"].get(trait) == key:
                continue
            self.log(f"collecting pos/neg answers for {trait} with {self.cfg.training.base_model} -> {log_dir}")
            tasks = [persona_collect(trait=trait, polarity=p, n_per_question=c.n, max_tokens=c.max_tokens,
                                     temperature=c.temperature, judge_mode=c.judge_mode,
                                     judge_min_mass=c.judge_min_mass)
                     for p in ("pos", "neg")]
            ok, logs = eval_set(tasks, log_dir=str(log_dir), model=self.cfg.training.base_model,
                                model_roles=self._roles(c.judge_mode), limit=c.limit, seed=c.seed,
                                display=self.display)
            if not ok:
                raise ExperimentError(f"collection for {trait} did not finish; run the same command again to resume")
            self.state["collect"][trait] = key
            self._save()
        return dirs

    # ---- train ----------------------------------------------------------------------------------------

    def _dataset_kwargs(self, m: ModelEntry, collected: dict[str, str]) -> dict[str, Any]:
        kwargs = {**self.cfg.training.dataset_kwargs, **m.dataset_kwargs}
        for key in ("path", "log_dir"):
            if isinstance(kwargs.get(key), str):
                kwargs[key] = str(self._path(kwargs[key]))
        if "logs" in kwargs:
            kwargs["logs"] = [str(self._path(p)) for p in kwargs["logs"]]
        if self._needs_collection(m):
            kwargs["log_dir"] = collected[m.trait]
        return kwargs

    def _steering(self) -> list[dict[str, Any]]:
        return [{**s, "vector": str(self._path(s["vector"]))} if isinstance(s.get("vector"), str) else dict(s)
                for s in self.cfg.training.steering]

    def _plan(self, m: ModelEntry, collected: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
        examples = load_dataset(m.dataset, m.trait, m.strength, **self._dataset_kwargs(m, collected))
        steering = self._steering()
        vector_hashes = [file_hash(s["vector"]) for s in steering if isinstance(s.get("vector"), str)]
        t = self.cfg.training
        key = content_hash("train", t.base_model, t.backend, t.hyperparameters, steering, vector_hashes,
                           m.suffix or m.name, examples)
        return key, examples

    def train(self, *, wait: bool = True) -> dict[str, str]:
        """Submit every model whose cached job is missing, stale, failed or cancelled; then wait for them.

        Every dataset is built before the first job starts; a job that fails is recorded and the others still
        run (`failures` lists the failed ones)."""
        collected = self.collect()
        backend = get_backend(self.cfg.training.backend)
        plans = {m.name: self._plan(m, collected) for m in self.cfg.models}
        actions: dict[str, str] = {}
        for m in self.cfg.models:
            key, examples = plans[m.name]
            rec = self.state["models"].get(m.name)
            if rec and rec.get("key") == key and rec["job"]["state"] not in ("failed", "cancelled"):
                job = Job.from_dict(rec["job"])
                if not job.finished:
                    job = backend.status(job)
                    rec["job"] = job.to_dict()
                    self._save()
                actions[m.name] = "cached" if job.state == "succeeded" else job.state
                continue
            why = "new" if not rec else ("retry after " + rec["job"]["state"] if rec.get("key") == key else "changed")
            self.log(f"training {m.name} ({m.trait}, {m.strength}, {len(examples)} examples) with "
                     f"{self.cfg.training.backend} [{why}]")
            request = TrainingRequest(base_model=self.cfg.training.base_model, examples=examples,
                                      suffix=m.suffix or m.name,
                                      output_dir=self.out / "models" / f"{m.name}-{key[:10]}",
                                      hyperparameters=dict(self.cfg.training.hyperparameters),
                                      steering=self._steering())
            job = _submit(backend, request)
            self.state["models"][m.name] = {"key": key, "examples": len(examples), "job": job.to_dict()}
            self._save()
            actions[m.name] = "submitted"
            if job.state == "failed":
                self.log(f"  {m.name} failed: {job.error}")
        if wait:
            for m in self.cfg.models:
                rec = self.state["models"][m.name]
                job = Job.from_dict(rec["job"])
                if not job.finished:
                    self.log(f"waiting for {m.name} ({job.id})")
                    job = backend.wait(job, poll_seconds=self.cfg.training.poll_seconds)
                    rec["job"] = job.to_dict()
                    self._save()
        return actions

    def failures(self) -> list[str]:
        """One line per configured model whose training job failed or was cancelled: its error and its log."""
        lines = []
        for m in self.cfg.models:
            rec = self.state["models"].get(m.name)
            if rec is None or rec["job"]["state"] not in ("failed", "cancelled"):
                continue
            job = Job.from_dict(rec["job"])
            log = Path(job.details["output_dir"]) / "job.json" if job.details.get("output_dir") else None
            where = (str(log) if log is not None and log.is_file()
                     else f"{job.backend} job {job.id or '(none)'}, recorded in {self.state_path}")
            lines.append(f"training {m.name} {job.state}: {job.error or 'no error given'} (log: {where})")
        return lines

    # ---- status ---------------------------------------------------------------------------------------

    def status(self, *, refresh: bool = True) -> list[dict[str, Any]]:
        backend = get_backend(self.cfg.training.backend)
        rows = []
        for m in self.cfg.models:
            rec = self.state["models"].get(m.name)
            if rec is None:
                rows.append({"name": m.name, "trait": m.trait, "strength": m.strength, "state": "not submitted",
                             "job": "", "model": "", "error": ""})
                continue
            job = Job.from_dict(rec["job"])
            if refresh and not job.finished:
                job = backend.status(job)
                rec["job"] = job.to_dict()
                self._save()
            rows.append({"name": m.name, "trait": m.trait, "strength": m.strength, "state": job.state, "job": job.id,
                         "model": job.model_id or "", "error": job.error or ""})
        return rows

    def trained(self) -> dict[str, tuple[ModelEntry, str]]:
        """Succeeded models: name -> (entry, model id)."""
        out = {}
        for m in self.cfg.models:
            rec = self.state["models"].get(m.name)
            if rec and rec["job"]["state"] == "succeeded" and rec["job"].get("model_id"):
                out[m.name] = (m, rec["job"]["model_id"])
        return out

    # ---- evaluate -------------------------------------------------------------------------------------

    def _eval_models(self) -> list[str]:
        ids = sorted({model_id for _, model_id in self.trained().values()})
        if self.cfg.evaluation.include_base and self.cfg.training.base_model not in ids:
            ids.append(self.cfg.training.base_model)
        return ids

    def evaluate(self) -> Path:
        """Every trained model x every detection task, one resumable eval_set; returns its log dir."""
        from inspect_ai import eval_set

        from pv_harness.tasks.persona import trait_eval

        missing = [m.name for m in self.cfg.models if m.name not in self.trained()]
        if missing:
            self.log(f"not trained yet (skipped): {', '.join(missing)}; run `pv experiment train` first")
        models = self._eval_models()
        if not models:
            raise ExperimentError("no trained model to evaluate; run `pv experiment train` first")
        e = self.cfg.evaluation
        key = content_hash("evaluate", e.model_dump(), models, self.grader)
        log_dir = self.out / "eval" / key[:12]
        rec = self.state["evaluate"]
        if rec.get("key") == key and rec.get("status") == "success":
            self.log(f"evaluation up to date: {log_dir}")
            return log_dir
        tasks = [trait_eval(trait=t, n_per_question=e.n, max_tokens=e.max_tokens, temperature=e.temperature,
                            judge_mode=e.judge_mode, judge_min_mass=e.judge_min_mass) for t in e.tasks]
        self.log(f"evaluating {len(models)} model(s) x {len(tasks)} detection task(s) -> {log_dir}")
        for note in self.judge_notes():
            self.log(f"note: {note}")
        ok, _ = eval_set(tasks, log_dir=str(log_dir), model=models, model_roles=self._roles(e.judge_mode),
                         limit=e.limit, seed=e.seed, display=self.display)
        self.state["evaluate"] = {"key": key, "log_dir": str(log_dir), "status": "success" if ok else "incomplete",
                                  "models": models}
        self._save()
        if not ok:
            raise ExperimentError("evaluation did not finish; run `pv experiment evaluate` again to resume")
        return log_dir

    # ---- results --------------------------------------------------------------------------------------

    def scores(self) -> list[dict[str, Any]]:
        """One record per (experiment model, detection task): the scored answers' trait scores, their mean with
        n and a 95% t interval (and the standard error), and the same for coherence."""
        from pv_harness.estimates import mean_interval
        from pv_harness.logs import finished_logs, log_path, read_collection_log

        rec = self.state.get("evaluate") or {}
        if rec.get("status") != "success":
            raise ExperimentError("no finished evaluation; run `pv experiment evaluate` first")
        by_id: dict[str, list[tuple[str, str, str]]] = {}
        for name, (m, model_id) in self.trained().items():
            by_id.setdefault(model_id, []).append((name, m.trait, m.strength))
        if self.cfg.evaluation.include_base:
            by_id.setdefault(self.cfg.training.base_model, []).append(("base", "base", "base"))
        records = []
        for header in finished_logs(rec["log_dir"]):
            if header.eval.model not in by_id:
                continue
            evaluated = read_collection_log(log_path(header.location))
            judged = evaluated.summary("trait")
            values = [a.trait_score for a in evaluated.answers if a.trait_score is not None]
            score = mean_interval(values)
            coherence = mean_interval([a.coherence for a in evaluated.answers])
            for name, trait, strength in by_id[header.eval.model]:
                records.append({
                    "model": name, "trait": trait, "strength": strength, "model_id": header.eval.model,
                    "task": (header.eval.task_args or {}).get("trait"),
                    "judge_mode": (header.eval.metadata or {}).get("judge_mode"),
                    "score": score.value, "ci": [score.low, score.high], "stderr": judged.stderr,
                    "unscored": judged.unscored, "scores": values,
                    "coherence": coherence.value, "coherence_ci": [coherence.low, coherence.high],
                    "scored": judged.scored, "log": evaluated.path,
                })
        return sorted(records, key=lambda r: (r["trait"], _order(r["strength"]), r["model"], r["task"]))

    def shifts(self) -> dict[str, Any]:
        """Per model and vector trait: the shift along the vector and along norm-matched random directions."""
        from pv_harness.organisms.shift import compute_shift, random_directions, unit
        from pv_harness.vectors.files import load_vector_rows

        s = self.cfg.shift
        if s is None:
            return {}
        base = self.cfg.training.base_model
        out: dict[str, Any] = {}
        means: dict[str, Any] = {}  # each model runs once per trait's questions
        for trait, vector in s.vectors.items():
            path = self._vector(trait, vector)
            vhash = file_hash(path)
            for name, (_, model_id) in self.trained().items():
                key = content_hash("shift", base, model_id, vhash, s.layer, s.random_directions, s.seed, trait)
                cached = self.state["shift"].get(key)
                if cached is None:
                    result = compute_shift(base, model_id, path, layer=s.layer, trait=trait, means=means)
                    rows = load_vector_rows(path)
                    v = rows[result.layer] if rows.ndim == 2 else rows
                    diff = means[f"{model_id}::{trait}"][result.layer] - means[f"{base}::{trait}"][result.layer]
                    null = [float(diff @ unit(r)) for r in random_directions(v.numel(), s.random_directions,
                                                                              float(v.norm()), s.seed)]
                    cached = {**result.as_dict(), "null": null}
                    self.state["shift"][key] = cached
                    self._save()
                out.setdefault(name, {})[trait] = cached
        return out

    def _vector(self, trait: str, vector: str) -> Path:
        if vector != "collected":
            return self._path(vector)
        from pv_harness.vectors.extraction import extract_from_logs

        dirs = self.collect()
        if trait not in dirs:
            raise ExperimentError(f"shift vector {trait}: collected needs a `collect:` section and a collected "
                                  f"model for {trait}")
        path = self.out / "vectors" / f"{trait}.safetensors"
        key = content_hash("vector", dirs[trait], self.cfg.shift.extract if self.cfg.shift else {})
        if self.state.get("vectors", {}).get(trait) != key or not path.exists():
            self.log(f"extracting the {trait} vector from {dirs[trait]}")
            extract_from_logs(log_dir=dirs[trait], trait=trait, model=self.cfg.training.base_model, out=path,
                              log=self.log, **(self.cfg.shift.extract if self.cfg.shift else {}))
            self.state.setdefault("vectors", {})[trait] = key
            self._save()
        return path

    def results(self) -> dict[str, Any]:
        """Cells with n and 95% intervals, each strength against baseline, the shift-vs-score correlation;
        written to eval_results.json and plots/results.html. `table` holds the cells' text (as the page)."""
        import pandas as pd

        from pv_harness.estimates import correlation
        from pv_harness.reports.organisms import cell_table, write_results_page

        records = self.scores()
        shifts = self.shifts()
        frame = pd.DataFrame(records)
        means = frame.pivot_table(index=["trait", "strength"], columns="task", values="score", aggfunc="mean")
        differences = versus_baseline(records)
        correlations = {}
        if shifts:
            for trait in self.cfg.shift.vectors:  # type: ignore[union-attr]
                rows = [(r["model"], r["score"]) for r in records if r["task"] == trait and r["model"] in shifts]
                xs = [shifts[name][trait]["shift"] for name, _ in rows]
                ys = [score for _, score in rows]
                k = self.cfg.shift.random_directions  # type: ignore[union-attr]
                null_rs = [correlation([shifts[name][trait]["null"][i] for name, _ in rows], ys).value
                           for i in range(k)]
                null = [abs(c) for c in null_rs if c is not None]
                estimate = correlation(xs, ys)
                r = estimate.value
                as_large = statistics.fmean(c >= abs(r) for c in null) if null and r is not None else None
                correlations[trait] = {"pearson": r, "pearson_ci": [estimate.low, estimate.high], "n": estimate.n,
                                       "models": len(rows), "null_mean_abs": statistics.fmean(null) if null else None,
                                       "null_fraction_as_large": as_large}
        notes = self.judge_notes()
        data = {"experiment": self.cfg.name, "config": str(self.path), "grader": self.grader,
                "judge_mode": self.cfg.evaluation.judge_mode, "notes": notes, "records": records,
                "table": {f"{t}/{s}": row.dropna().to_dict() for (t, s), row in means.iterrows()},
                "versus_baseline": differences, "shift": shifts, "shift_correlation": correlations}
        atomic_write_json(self.out / "eval_results.json", data)
        page = write_results_page(self.out / "plots" / "results.html", self.cfg.name, records, shifts, correlations,
                                  differences, notes=notes)
        return {"table": cell_table(records), "data": data, "json": self.out / "eval_results.json", "html": page}

    def judge_notes(self) -> list[str]:
        """What a reader must know about the detection scores' judge (shown above the results)."""
        from pv_harness.scorers.judge import LIKELIHOOD, judge_note

        mode = self.cfg.evaluation.judge_mode
        note = judge_note(self.grader, mode)
        notes = [] if note is None else [note]
        if mode == LIKELIHOOD:
            base = self.grader == self.cfg.training.base_model
            whose = " (the base model), never by the organism itself" if base else ""
            notes.append(f"Every model's answers are scored with {self.grader}{whose}; coherence is on the likelihood "
                         "judge's scale: read it against the baseline model's, not against 50.")
        return notes


def _submit(backend: TrainingBackend, request: TrainingRequest) -> Job:
    """The backend's job, or a failed one saying why submitting raised: one model's failure stops no other."""
    try:
        return backend.submit(request)
    except Exception as ex:  # noqa: BLE001 - recorded as a failed job (never reused) and reported by `failures`
        request.output_dir.mkdir(parents=True, exist_ok=True)
        job = Job(backend=backend.name, id="", state="failed", base_model=request.base_model,
                  error=f"{type(ex).__name__}: {ex}", details={"output_dir": str(request.output_dir)})
        atomic_write_json(request.output_dir / "job.json", job.to_dict())
        return job


def _state_problem(state: Any) -> str | None:
    """What is wrong with a parsed state file's shape, or None (every later step reads these fields)."""
    if not isinstance(state, dict):
        return f"a JSON object expected, got {type(state).__name__}"
    for section in (*STATE_SECTIONS, "vectors"):
        if not isinstance(state.get(section, {}), dict):
            return f"{section!r} should be an object"
    for name, rec in state.get("models", {}).items():
        job = rec.get("job") if isinstance(rec, dict) else None
        if not (isinstance(job, dict) and isinstance(rec.get("key"), str) and isinstance(job.get("id"), str)
                and isinstance(job.get("backend"), str) and job.get("state") in get_args(JobState)
                and isinstance(job.get("details", {}), dict)):
            return f"models.{name} should hold a key and a job with backend, id and state"
    return None


def versus_baseline(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per trained trait, detection task and strength above baseline: mean(strength) - mean(baseline) of the
    scored answers (the models of one strength pooled), with Welch's 95% t interval."""
    from pv_harness.estimates import difference_interval

    pooled: dict[tuple[str, str, str], list[float]] = {}
    for r in records:
        pooled.setdefault((r["trait"], r["task"], r["strength"]), []).extend(r["scores"])
    out = []
    for (trait, task, strength), values in sorted(pooled.items(), key=lambda kv: (kv[0][:2], _order(kv[0][2]))):
        baseline = pooled.get((trait, task, "baseline"))
        if strength not in STRENGTHS or strength == "baseline" or baseline is None:
            continue
        d = difference_interval(values, baseline)
        out.append({"trait": trait, "task": task, "strength": strength, "difference": d.value, "ci": [d.low, d.high],
                    "n": [len(values), len(baseline)], "method": d.method})
    return out


def _order(strength: str) -> int:
    return STRENGTHS.index(strength) if strength in STRENGTHS else -1
