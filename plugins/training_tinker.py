"""The `tinker` training backend: LoRA fine-tuning on Thinking Machines' Tinker service, through its SDK.

An optional extra: `pip install tinker` (and `TINKER_API_KEY`). Without the SDK the backend is still
listed, and `submit` says how to install it. The job runs inside `submit`: the examples are tokenised with
the service's tokenizer and chat template (loss on assistant tokens only), trained for `epochs` with
`learning_rate`, `batch_size` and `lora_rank`, and the weights saved for sampling. The result id is
`tinker/<sampler weights path>` (evaluate it through a provider that serves Tinker weights).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pv_harness.hookspecs import hookimpl
from pv_harness.organisms.training import BaseBackend, Job, TrainingError, TrainingRequest, content_hash

INSTALL = "the tinker backend needs the Tinker SDK: pip install tinker (and set TINKER_API_KEY)"
DEFAULTS = {"epochs": 1, "learning_rate": 1e-4, "batch_size": 8, "lora_rank": 32, "max_length": 2048}


def tinker_sdk() -> Any:
    try:
        import tinker
    except ImportError as ex:
        raise TrainingError(INSTALL) from ex
    return tinker


class TinkerBackend(BaseBackend):
    name = "tinker"

    def submit(self, request: TrainingRequest) -> Job:
        tinker_sdk()  # a clear message before anything else when the SDK is absent
        return self._train(request)

    def _train(self, request: TrainingRequest) -> Job:  # pragma: no cover - needs the service
        tinker = tinker_sdk()
        from pv_harness.default_plugins.training_local import assistant_labels
        from tinker import types

        unknown = set(request.hyperparameters) - set(DEFAULTS)
        if unknown:
            raise TrainingError(f"unknown hyperparameter(s) {sorted(unknown)} for the tinker backend")
        if request.steering:
            raise TrainingError("the tinker backend cannot steer during training")
        hp = {**DEFAULTS, **request.hyperparameters}
        job = Job(backend=self.name, id="tinker-" + content_hash(request.base_model, request.examples)[:12],
                  state="running", base_model=request.base_model)
        try:
            service = tinker.ServiceClient()
            client = service.create_lora_training_client(base_model=request.base_model, rank=int(hp["lora_rank"]))
            tokenizer = client.get_tokenizer()
            data = []
            for ex in request.examples:
                ids, labels = assistant_labels(tokenizer, ex["messages"], int(hp["max_length"]))
                weights = [0.0 if t == -100 else 1.0 for t in labels]
                data.append(types.Datum(model_input=types.ModelInput.from_ints(ids[:-1]),
                                        loss_fn_inputs={"target_tokens": ids[1:], "weights": weights[1:]}))
            size = int(hp["batch_size"])
            for _ in range(int(hp["epochs"])):
                for start in range(0, len(data), size):
                    fb = client.forward_backward(data[start:start + size], "cross_entropy")
                    opt = client.optim_step(types.AdamParams(learning_rate=float(hp["learning_rate"])))
                    fb.result()
                    opt.result()
            path = client.save_weights_for_sampler(name=request.suffix).result().path
        except Exception as ex:  # noqa: BLE001 - recorded as a failed job, never reused
            job.state, job.error = "failed", f"{type(ex).__name__}: {ex}"
            return job
        job.state, job.model_id = "succeeded", f"tinker/{path}"
        job.details["sampler_path"] = path
        return job


@hookimpl
def register_training_backends(register: Callable[..., None]) -> None:
    register("tinker", TinkerBackend)
