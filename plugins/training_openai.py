"""The `openai` training backend: OpenAI's fine-tuning API through the openai SDK.

`submit` writes the examples as JSONL, uploads the file (purpose `fine-tune`) and creates a job; `status`
retrieves it; the result is `openai/<fine_tuned_model>` (`openai/ft:gpt-4.1-nano-...:suffix:id`), which
inspect evaluates directly. The base model may be written `openai/<name>` or `<name>`.

Hyperparameters: `n_epochs`, `batch_size`, `learning_rate_multiplier` go to the API; `base_url` and
`api_key` (default: the SDK's `OPENAI_BASE_URL` / `OPENAI_API_KEY`) choose the endpoint; `seed` is passed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pv_harness.hookspecs import hookimpl
from pv_harness.organisms.training import BaseBackend, Job, TrainingError, TrainingRequest, write_jsonl

API_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
CLIENT_OPTIONS = ("base_url", "api_key")
STATES = {"validating_files": "pending", "queued": "pending", "running": "running", "succeeded": "succeeded",
          "failed": "failed", "cancelled": "cancelled"}


class OpenAIBackend(BaseBackend):
    name = "openai"

    def _client(self, options: dict[str, Any]) -> Any:
        try:
            from openai import OpenAI
        except ImportError as ex:  # pragma: no cover - openai is a dependency
            raise TrainingError("the openai backend needs the openai package: pip install openai") from ex
        return OpenAI(**{k: options[k] for k in CLIENT_OPTIONS if options.get(k)})

    def submit(self, request: TrainingRequest) -> Job:
        hp = dict(request.hyperparameters)
        unknown = set(hp) - set(API_HYPERPARAMETERS) - set(CLIENT_OPTIONS) - {"seed"}
        if unknown:
            raise TrainingError(f"unknown hyperparameter(s) {sorted(unknown)} for the openai backend")
        if request.steering:
            raise TrainingError("the openai backend cannot steer during training (no access to activations)")
        client = self._client(hp)
        base = request.base_model.removeprefix("openai/")
        data = write_jsonl(request.examples, Path(request.output_dir) / "train.jsonl")
        with open(data, "rb") as f:
            uploaded = client.files.create(file=f, purpose="fine-tune")
        api_hp = {k: hp[k] for k in API_HYPERPARAMETERS if k in hp}
        kwargs: dict[str, Any] = {"model": base, "training_file": uploaded.id, "suffix": request.suffix[:64]}
        if api_hp:
            kwargs["hyperparameters"] = api_hp
        if "seed" in hp:
            kwargs["seed"] = int(hp["seed"])
        remote = client.fine_tuning.jobs.create(**kwargs)
        job = Job(backend=self.name, id=remote.id, base_model=request.base_model,
                  details={"training_file": uploaded.id, "client": {k: hp[k] for k in ("base_url",) if k in hp}})
        return self._update(job, remote)

    def status(self, job: Job) -> Job:
        if job.finished:
            return job
        client = self._client(job.details.get("client", {}))
        return self._update(job, client.fine_tuning.jobs.retrieve(job.id))

    def _update(self, job: Job, remote: Any) -> Job:
        job.state = STATES.get(remote.status, "running")  # type: ignore[assignment]
        if job.state == "succeeded":
            if not remote.fine_tuned_model:
                job.state, job.error = "failed", "the job succeeded without a fine_tuned_model"
            else:
                job.model_id = f"openai/{remote.fine_tuned_model}"
        if job.state == "failed" and remote.error is not None and getattr(remote.error, "message", None):
            job.error = remote.error.message
        return job


@hookimpl
def register_training_backends(register: Callable[..., None]) -> None:
    register("openai", OpenAIBackend)
