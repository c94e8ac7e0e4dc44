"""The `local` training backend: LoRA (peft) on a transformers model, on this machine, and `dummy`.

Loss is on assistant tokens only (each assistant turn and its end-of-turn token). Outputs, under the
request's `output_dir`: `adapter/` (the LoRA weights), `merged/` (a plain transformers folder: evaluate it
as `pv/<that folder>`), `job.json` and `train_log.json` (loss per step).

Preventative steering: `request.steering` entries (`{"vector": FILE, "layer": L, "coef": C, "op": "add"}`
or `op: ablate`) are applied with `pv_harness.provider.interventions.steer_all` to every forward pass *while training
only*; the saved model carries no hook.

Hyperparameters (defaults): epochs 1, learning_rate 1e-4, batch_size 4, max_steps None, lora_rank 8,
lora_alpha 16, lora_dropout 0.0, target_modules "all-linear", max_length 512, seed 0, device auto.
The job runs inside `submit` (it returns finished); `status` reads `job.json` back.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from pv_harness.hookspecs import hookimpl
from pv_harness.organisms.training import BaseBackend, Job, TrainingError, TrainingRequest, content_hash

DEFAULTS: dict[str, Any] = {
    "epochs": 1, "learning_rate": 1e-4, "batch_size": 4, "max_steps": None, "lora_rank": 8, "lora_alpha": 16,
    "lora_dropout": 0.0, "target_modules": "all-linear", "max_length": 512, "seed": 0, "device": None,
}


class DummyBackend(BaseBackend):
    """Trains nothing: the job succeeds at once with the base model as its result (for tests and dry runs)."""

    name = "dummy"

    def submit(self, request: TrainingRequest) -> Job:
        job_id = "dummy-" + content_hash(request.base_model, request.suffix, request.examples)[:12]
        return Job(backend=self.name, id=job_id, state="succeeded", base_model=request.base_model,
                   model_id=request.base_model, details={"examples": len(request.examples)})


def assistant_labels(tokenizer: Any, messages: list[dict[str, str]], max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of the templated conversation and labels (-100 everywhere but assistant turns).

    The text is tokenised once; an assistant turn's span is the text between the conversation before it
    (with the generation prompt) and the conversation through it, so it includes the end-of-turn token.
    """
    full = str(tokenizer.apply_chat_template(messages, tokenize=False))
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = str(tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True))
        through = str(tokenizer.apply_chat_template(messages[: i + 1], tokenize=False))
        if not full.startswith(through) or not through.startswith(before):
            raise TrainingError("the chat template does not render a conversation as a prefix of a longer one; "
                                "cannot find assistant tokens")
        spans.append((len(before), len(through)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])[:max_length]
    labels = []
    for tok, (start, end) in zip(ids, enc["offset_mapping"], strict=False):
        inside = any(s <= start and end <= e and end > start for s, e in spans)
        labels.append(tok if inside else -100)
    return ids, labels


class LocalBackend(BaseBackend):
    name = "local"

    def submit(self, request: TrainingRequest) -> Job:
        out = Path(request.output_dir)
        job = Job(backend=self.name, id=f"local-{out.name}", state="running", base_model=request.base_model,
                  details={"output_dir": str(out.resolve())})
        out.mkdir(parents=True, exist_ok=True)
        self._save(job)
        try:
            metrics = train_lora(request)
        except Exception as ex:  # noqa: BLE001 - a failed job is recorded, never reused
            job.state, job.error = "failed", f"{type(ex).__name__}: {ex}"
            self._save(job)
            return job
        job.state = "succeeded"
        job.model_id = f"pv/{(out / 'merged').resolve()}"
        job.details.update(metrics)
        self._save(job)
        return job

    def status(self, job: Job) -> Job:
        file = Path(job.details.get("output_dir", "")) / "job.json"
        if not file.is_file():
            return job
        saved = Job.from_dict(json.loads(file.read_text()))
        if saved.state == "succeeded" and not (file.parent / "merged" / "config.json").is_file():
            saved.state, saved.error = "failed", "the merged model folder is missing"
        return saved

    def _save(self, job: Job) -> None:
        from pv_harness.atomic import atomic_write_json

        atomic_write_json(Path(job.details["output_dir"]) / "job.json", job.to_dict())


def train_lora(request: TrainingRequest) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pv_harness.atomic import atomic_write_json
    from pv_harness.models import local_path
    from pv_harness.provider.engine import resolve_device
    from pv_harness.provider.interventions import parse_steer, steer_all
    from pv_harness.provider.layers import find_layers

    unknown = set(request.hyperparameters) - set(DEFAULTS)
    if unknown:
        raise TrainingError(f"unknown hyperparameter(s) {sorted(unknown)} for the local backend; "
                            f"known: {sorted(DEFAULTS)}")
    hp = {**DEFAULTS, **request.hyperparameters}
    out = Path(request.output_dir)
    path = local_path(request.base_model)
    device = resolve_device(hp["device"])
    torch.manual_seed(int(hp["seed"]))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    rows = [assistant_labels(tokenizer, ex["messages"], int(hp["max_length"])) for ex in request.examples]
    rows = [r for r in rows if any(t != -100 for t in r[1])]
    if not rows:
        raise TrainingError("no example has assistant tokens within max_length")

    config = LoraConfig(r=int(hp["lora_rank"]), lora_alpha=int(hp["lora_alpha"]),
                        lora_dropout=float(hp["lora_dropout"]), target_modules=hp["target_modules"],
                        task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    base = peft_model.get_base_model()
    layers = find_layers(base)
    specs = parse_steer(request.steering, hidden=base.config.get_text_config().hidden_size,
                        num_layers=layers.num_layers) if request.steering else []

    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(hp["learning_rate"]))
    batch_size = int(hp["batch_size"])
    steps_per_epoch = math.ceil(len(rows) / batch_size)
    total = steps_per_epoch * int(hp["epochs"])
    if hp["max_steps"] is not None:
        total = min(total, int(hp["max_steps"])) if hp["epochs"] else int(hp["max_steps"])
    rng = torch.Generator().manual_seed(int(hp["seed"]))
    losses: list[float] = []
    started = time.monotonic()
    peft_model.train()
    step = 0
    with steer_all(base, specs, layers) if specs else nullcontext():
        while step < total:
            order = torch.randperm(len(rows), generator=rng).tolist()
            for b in range(0, len(order), batch_size):
                if step >= total:
                    break
                batch = [rows[i] for i in order[b:b + batch_size]]
                width = max(len(ids) for ids, _ in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                labels = torch.full((len(batch), width), -100, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for j, (x, y) in enumerate(batch):
                    ids[j, :len(x)], labels[j, :len(y)], mask[j, :len(x)] = torch.tensor(x), torch.tensor(y), 1
                loss = peft_model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                  labels=labels.to(device)).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                losses.append(float(loss.detach()))
                step += 1
    peft_model.eval()
    seconds = time.monotonic() - started

    tmp = out / ".saving"
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(tmp / "adapter")
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp / "merged")
    tokenizer.save_pretrained(tmp / "merged")
    for name in ("adapter", "merged"):
        shutil.rmtree(out / name, ignore_errors=True)
        (tmp / name).replace(out / name)
    shutil.rmtree(tmp, ignore_errors=True)
    metrics = {"steps": step, "examples": len(rows), "train_seconds": round(seconds, 2),
               "first_loss": losses[0], "last_loss": losses[-1], "hyperparameters": hp,
               "steering": request.steering}
    atomic_write_json(out / "train_log.json", {**metrics, "losses": losses})
    return metrics


@hookimpl
def register_training_backends(register: Callable[..., None]) -> None:
    register("local", LocalBackend)
    register("dummy", DummyBackend)
