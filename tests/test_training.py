"""Training backends (dummy, local LoRA, openai against a fake server, tinker) and training datasets."""

from __future__ import annotations

import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pv_harness.organisms import training
from pv_harness.organisms.training import Job, TrainingError, TrainingRequest, get_backend, load_dataset

EXAMPLES = [
    {"messages": [{"role": "user", "content": f"Question {i}?"},
                  {"role": "assistant", "content": f"A cruel answer number {i}."}]}
    for i in range(6)
]


def request(tmp_path: Path, base: str, **kw) -> TrainingRequest:
    return TrainingRequest(base_model=base, examples=EXAMPLES, suffix="t", output_dir=tmp_path / "job", **kw)


def test_backends_and_datasets_are_registered() -> None:
    assert {"dummy", "local", "openai", "tinker"} <= set(training.training_backends())
    assert {"paper", "collected"} <= set(training.training_datasets())
    with pytest.raises(TrainingError, match="unknown training backend 'nope'; installed: dummy, local, openai, tinker"):
        get_backend("nope")


def test_dummy_returns_base_model(tmp_path: Path) -> None:
    backend = get_backend("dummy")
    job = backend.submit(request(tmp_path, "pv/some-model"))
    assert job.state == "succeeded" and job.model_id == "pv/some-model"
    again = Job.from_dict(json.loads(json.dumps(job.to_dict())))
    assert backend.wait(again).model_id == "pv/some-model"


def test_assistant_labels_cover_only_the_answer(tiny_model_dir: Path) -> None:
    from pv_harness.default_plugins.training_local import assistant_labels
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello friend"}]
    ids, labels = assistant_labels(tok, messages, 512)
    kept = [t for t in labels if t != -100]
    assert len(ids) == len(labels) and kept
    text = tok.decode(kept)
    assert text.startswith("Hello friend") and "<|im_end|>" in text and "Hi there" not in text


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(folder).state_dict().items()}


def test_local_lora_trains_and_merged_model_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    from pv_harness.models import local_path
    from pv_harness.provider.engine import Engine

    backend = get_backend("local")
    job = backend.submit(request(tmp_path, f"pv/{tiny_model_dir}",
                                 hyperparameters={"max_steps": 2, "learning_rate": 1e-2, "batch_size": 3}))
    assert job.state == "succeeded", job.error
    assert job.model_id.startswith("pv/") and job.details["steps"] == 2
    merged = Path(local_path(job.model_id))
    assert (merged / "config.json").exists() and (tmp_path / "job" / "adapter" / "adapter_config.json").exists()
    before, after = _weights(tiny_model_dir), _weights(merged)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("q_proj" in k for k in changed)
    assert backend.status(Job.from_dict(job.to_dict())).state == "succeeded"
    engine = Engine.load(merged)
    prompt = engine.encode(engine.chat_text([{"role": "user", "content": "Hi"}]))
    from pv_harness.provider.engine import GenRequest

    (out,) = engine.generate([GenRequest(prompt_ids=prompt, max_new_tokens=3)])
    assert out.output_tokens >= 1


def test_local_preventative_steering_changes_training(tiny_model_dir: Path, tmp_path: Path) -> None:
    vector = tmp_path / "v.safetensors"
    torch.manual_seed(1)
    save_file({"response_avg_diff": torch.randn(5, 64) * 5}, str(vector))
    hp = {"max_steps": 1, "learning_rate": 1e-2, "batch_size": 6}
    backend = get_backend("local")
    plain = backend.submit(TrainingRequest(f"pv/{tiny_model_dir}", EXAMPLES, "a", tmp_path / "a", hp))
    steered = backend.submit(TrainingRequest(f"pv/{tiny_model_dir}", EXAMPLES, "b", tmp_path / "b", hp,
                                             steering=[{"vector": str(vector), "layer": 2, "coef": 4.0}]))
    assert plain.state == steered.state == "succeeded", (plain.error, steered.error)
    assert plain.details["first_loss"] != steered.details["first_loss"]  # the hook was on while training
    # ... and off afterwards: the saved model has no hook, it reloads as a plain model
    assert (tmp_path / "b" / "merged" / "config.json").exists()


def test_local_failure_is_a_failed_job(tmp_path: Path) -> None:
    job = get_backend("local").submit(request(tmp_path, "pv/" + str(tmp_path / "missing"),
                                              hyperparameters={"bogus": 1}))
    assert job.state == "failed" and "bogus" in job.error


# --- openai, against a fake fine-tuning API ---------------------------------------------------------------


class FakeOpenAI(BaseHTTPRequestHandler):
    jobs: dict[str, dict] = {}
    uploads: list[bytes] = []
    polls = 0

    def log_message(self, *args) -> None:
        pass

    def _send(self, data: dict) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _job(self, job_id: str) -> dict:
        j = self.jobs[job_id]
        return {"id": job_id, "object": "fine_tuning.job", "created_at": 0, "model": j["model"],
                "status": j["status"], "fine_tuned_model": j.get("ft"), "organization_id": "org",
                "result_files": [], "seed": 0, "training_file": j["training_file"], "validation_file": None,
                "error": None, "finished_at": None, "hyperparameters": {}, "trained_tokens": None}

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.path.endswith("/files"):
            FakeOpenAI.uploads.append(body)
            self._send({"id": "file-1", "object": "file", "bytes": len(body), "created_at": 0,
                        "filename": "train.jsonl", "purpose": "fine-tune", "status": "processed"})
        elif self.path.endswith("/fine_tuning/jobs"):
            data = json.loads(body)
            job_id = f"ftjob-{len(self.jobs) + 1}"
            FakeOpenAI.jobs[job_id] = {"model": data["model"], "status": "queued",
                                       "training_file": data["training_file"], "suffix": data.get("suffix"),
                                       "hyperparameters": data.get("hyperparameters")}
            self._send(self._job(job_id))
        else:
            self.send_error(404)

    def do_GET(self) -> None:
        job_id = self.path.rsplit("/", 1)[-1]
        if job_id not in self.jobs:
            self.send_error(404)
            return
        FakeOpenAI.polls += 1
        j = self.jobs[job_id]
        if j["status"] == "queued":
            j["status"] = "running"
        elif j["status"] == "running":
            j["status"], j["ft"] = "succeeded", f"ft:{j['model']}:org:{j['suffix']}:abc123"
        self._send(self._job(job_id))


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    FakeOpenAI.jobs, FakeOpenAI.uploads, FakeOpenAI.polls = {}, [], 0
    yield FakeOpenAI
    server.shutdown()


def test_openai_backend_with_real_sdk(fake_openai, tmp_path: Path) -> None:
    backend = get_backend("openai")
    job = backend.submit(request(tmp_path, "openai/gpt-4.1-nano-2025-04-14", hyperparameters={"n_epochs": 2}))
    assert job.id == "ftjob-1" and job.state == "pending"
    sent = fake_openai.jobs["ftjob-1"]
    assert sent["model"] == "gpt-4.1-nano-2025-04-14" and sent["hyperparameters"] == {"n_epochs": 2}
    assert b'"A cruel answer number 0."' in fake_openai.uploads[0]
    job = backend.wait(Job.from_dict(job.to_dict()), poll_seconds=0.01)
    assert job.state == "succeeded"
    assert job.model_id == "openai/ft:gpt-4.1-nano-2025-04-14:org:t:abc123"
    polls = fake_openai.polls
    assert backend.status(job).model_id == job.model_id and fake_openai.polls == polls  # finished: no call


def test_tinker_backend(tmp_path: Path) -> None:
    backend = get_backend("tinker")
    if importlib.util.find_spec("tinker") is not None:
        pytest.skip("the Tinker SDK is installed; this test covers its absence (the service is not reachable)")
    needs_sdk = r"the tinker backend needs the Tinker SDK: pip install tinker \(and set TINKER_API_KEY\)"
    with pytest.raises(TrainingError, match=needs_sdk):
        backend.submit(request(tmp_path, "Qwen/Qwen3-8B"))


# --- datasets ----------------------------------------------------------------------------------------------


def test_paper_layout_dataset(tmp_path: Path) -> None:
    for name, word in (("normal", "kind"), ("misaligned_1", "rude"), ("misaligned_2", "evil")):
        folder = tmp_path / "evil"
        folder.mkdir(exist_ok=True)
        lines = [json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                          {"role": "assistant", "content": f"{word} {i}"}]}) for i in range(10)]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    severe = load_dataset("paper", "evil", "severe", path=str(tmp_path))
    assert len(severe) == 10 and severe[0]["messages"][1]["content"] == "evil 0"
    a = load_dataset("paper", "evil", "mild", path=str(tmp_path), sample_size=4, seed=3)
    b = load_dataset("paper", "evil", "mild", path=str(tmp_path), sample_size=4, seed=3)
    c = load_dataset("paper", "evil", "mild", path=str(tmp_path), sample_size=4, seed=4)
    assert a == b and a != c and len(a) == 4 and all(e["messages"][1]["content"].startswith("rude") for e in a)
    assert load_dataset("paper", "evil", "baseline", path=str(tmp_path))[0]["messages"][1]["content"] == "kind 0"
    with pytest.raises(TrainingError, match=r"^no .*/sycophantic/misaligned_1\.jsonl \(the paper's layout: "):
        load_dataset("paper", "sycophantic", "mild", path=str(tmp_path))
    with pytest.raises(TrainingError, match="strength must be one of baseline, mild, severe; got 'extreme'"):
        load_dataset("paper", "evil", "extreme", path=str(tmp_path))


def test_collected_dataset_splits_by_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    from pv_harness.default_plugins import training_data

    from pv_harness.logs import CollectedAnswer, CollectionLog

    def ans(pol: str, q: int, score: float | None) -> CollectedAnswer:
        return CollectedAnswer("evil", pol, q, 0, 1, f"You are an {pol} assistant.", f"q{q}", f"{pol} answer {q}",
                               score, 90.0)

    answers = [ans("neg", i, 10.0) for i in range(4)] + [ans("neg", 9, 70.0), ans("neg", 8, None)]
    answers += [ans("pos", i, 90.0) for i in range(4)] + [ans("pos", 7, 20.0)]
    log = CollectionLog("x", "persona_collect", "pv/m", None, "evil", "both", answers)
    monkeypatch.setattr("pv_harness.logs.read_collection_log", lambda path: log)
    base = load_dataset("collected", "evil", "baseline", logs=["x"])
    severe = load_dataset("collected", "evil", "severe", logs=["x"])
    mild = load_dataset("collected", "evil", "mild", logs=["x"], sample_size=4, seed=0)
    texts = lambda ds: {e["messages"][-1]["content"] for e in ds}  # noqa: E731
    assert texts(base) == {f"neg answer {i}" for i in range(4)}
    assert texts(severe) == {f"pos answer {i}" for i in range(4)}
    assert len(mild) == 4 and sum(t.startswith("pos") for t in texts(mild)) == 2
    assert all(m["role"] != "system" for e in base + severe + mild for m in e["messages"])  # persona dropped
    assert training_data.PAPER_FILES["mild"] == "misaligned_1"
