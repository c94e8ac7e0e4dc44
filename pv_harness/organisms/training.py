"""Fine-tuning for model organisms: one interface over training backends, and trait x strength datasets.

A backend (registered through the `register_training_backends` hook) turns a `TrainingRequest` into a
`Job`:

    backend = get_backend("local")
    job = backend.submit(request)      # starts (or, for local/dummy, runs) the job
    job = backend.status(job)          # refreshes its state from wherever it runs
    job = backend.wait(job)            # polls until it is finished
    job.model_id                       # what inspect evaluates: pv/<folder>, openai/ft:..., ...

A `Job` is plain data (JSON round trip with `to_dict`/`from_dict`) so experiments can store it and ask
the same backend about it later, from another process. States: `pending`, `running`, `succeeded`,
`failed`, `cancelled`; only a succeeded job has a `model_id`.

A dataset source (registered through `register_training_datasets`) is a loader
`loader(trait, strength, *, sample_size=None, seed=0, **options) -> list[Example]` where an example is
`{"messages": [{"role": ..., "content": ...}, ...]}` ending in an assistant message.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pv_harness import plugin_manager
from pv_harness.errors import PvError

JobState = Literal["pending", "running", "succeeded", "failed", "cancelled"]
FINISHED: tuple[str, ...] = ("succeeded", "failed", "cancelled")
STRENGTHS = ("baseline", "mild", "severe")
Example = dict[str, Any]  # {"messages": [...]}


class TrainingError(RuntimeError, PvError):
    """A training backend or dataset could not do what was asked."""


@dataclass
class TrainingRequest:
    """What to train: a base model, examples, hyperparameters and where outputs may go."""

    base_model: str
    examples: list[Example]
    suffix: str
    output_dir: Path
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    steering: list[dict[str, Any]] = field(default_factory=list)  # preventative steering (local backend)


@dataclass
class Job:
    backend: str
    id: str
    state: JobState = "pending"
    base_model: str = ""
    model_id: str | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # backend-specific (paths, metrics, remote ids)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class TrainingBackend(Protocol):
    name: str

    def submit(self, request: TrainingRequest) -> Job: ...

    def status(self, job: Job) -> Job: ...

    def wait(self, job: Job, *, poll_seconds: float = 10.0, timeout: float | None = None) -> Job: ...


class BaseBackend:
    """Default `wait` (poll `status`) and `status` (the job as it is) for backends to build on."""

    name = "base"

    def submit(self, request: TrainingRequest) -> Job:  # pragma: no cover - abstract
        raise NotImplementedError

    def status(self, job: Job) -> Job:
        return job

    def wait(self, job: Job, *, poll_seconds: float = 10.0, timeout: float | None = None) -> Job:
        start = time.monotonic()
        job = self.status(job)
        while not job.finished:
            if timeout is not None and time.monotonic() - start > timeout:
                raise TrainingError(f"job {job.id} still {job.state} after {timeout:g}s")
            time.sleep(poll_seconds)
            job = self.status(job)
        return job


# --- registries -------------------------------------------------------------------------------------


def training_backends() -> dict[str, Callable[[], TrainingBackend]]:
    """Backend factories by name (`dummy`, `local`, `openai`, `tinker`, and any a plugin adds)."""
    return plugin_manager.collected(plugin_manager.TRAINING_BACKENDS).named


def get_backend(name: str) -> TrainingBackend:
    backends = plugin_manager.collected(plugin_manager.TRAINING_BACKENDS)
    if name not in backends.named:
        raise TrainingError(backends.problem(name))
    return backends.named[name]()


DatasetLoader = Callable[..., list[Example]]


def training_datasets() -> dict[str, DatasetLoader]:
    """Dataset sources by name (`paper`, `collected`, and any a plugin adds)."""
    return plugin_manager.collected(plugin_manager.TRAINING_DATASETS).named


def load_dataset(source: str, trait: str, strength: str, *, sample_size: int | None = None, seed: int = 0,
                 **options: Any) -> list[Example]:
    """Examples of `trait` at `strength` from a registered dataset source, checked."""
    if strength not in STRENGTHS:
        raise TrainingError(f"strength must be one of {', '.join(STRENGTHS)}; got {strength!r}")
    sources = plugin_manager.collected(plugin_manager.TRAINING_DATASETS)
    if source not in sources.named:
        raise TrainingError(sources.problem(source))
    examples = sources.named[source](trait, strength, sample_size=sample_size, seed=seed, **options)
    for i, ex in enumerate(examples):
        check_example(ex, f"{source}:{trait}:{strength}[{i}]")
    if not examples:
        raise TrainingError(f"dataset {source!r} has no examples for {trait} at strength {strength}")
    return examples


def check_example(example: Any, where: str = "example") -> None:
    msgs = example.get("messages") if isinstance(example, dict) else None
    if not isinstance(msgs, list) or not msgs:
        raise TrainingError(f"{where}: an example is {{'messages': [...]}} with at least one message")
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(
                m.get("content"), str):
            raise TrainingError(f"{where}: each message needs a role (system/user/assistant) and text content")
    if msgs[-1]["role"] != "assistant":
        raise TrainingError(f"{where}: the last message must be the assistant's answer")


def sample(examples: Sequence[Example], sample_size: int | None, seed: int) -> list[Example]:
    """`sample_size` examples drawn without replacement with `seed` (all, in order, when None or larger)."""
    examples = list(examples)
    if sample_size is None or sample_size >= len(examples):
        return examples
    if sample_size < 1:
        raise TrainingError(f"sample_size must be positive; got {sample_size}")
    return random.Random(seed).sample(examples, sample_size)


def content_hash(*parts: Any) -> str:
    """A stable hash of JSON-able parts (dict keys sorted)."""
    text = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_jsonl(examples: Sequence[Example], path: str | Path) -> Path:
    from pv_harness.atomic import atomic_write_text

    return atomic_write_text(path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples))


def read_jsonl(path: str | Path) -> list[Example]:
    """A JSONL file of chat examples, read with Hugging Face `datasets` (imported here: see module doc)."""
    return _hf_json(path)


def _hf_json(path: str | Path) -> list[Example]:
    try:
        from datasets import load_dataset as hf_load  # type: ignore[attr-defined]  # mypy sees our datasets/
    except ImportError as ex:  # our repo's `datasets/` folder shadows HF datasets when run from the root
        raise TrainingError(f"cannot import Hugging Face datasets ({ex}); run from outside the repository root") from ex
    ds = hf_load("json", data_files=str(path), split="train")
    return [{"messages": [{"role": m["role"], "content": m["content"]} for m in row["messages"]]} for row in ds]
