"""One load per model per process: every `pv/` model, role and step with the same load arguments shares one Engine."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from inspect_ai.model import GenerateConfig, get_model, get_model_info

from pv_harness.organisms.shift import load_engine
from pv_harness.pipeline import RunConfig, run
from pv_harness.provider import engine as engine_module
from pv_harness.provider.engine import Engine


@pytest.fixture
def model_dir(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of the tiny model no other test has loaded, and a registry of loaded engines of this test's own."""
    monkeypatch.setattr(engine_module, "_LOADED", {})
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny"))


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every folder transformers loads a causal LM's weights from, in order."""
    from transformers import AutoModelForCausalLM

    calls: list[str] = []
    original = AutoModelForCausalLM.from_pretrained

    def counting(name_or_path, *args, **kwargs):
        calls.append(str(name_or_path))
        return original(name_or_path, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", counting)
    return calls


def test_models_with_the_same_load_args_share_one_engine(model_dir: Path, loads: list[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    subject = get_model(f"pv/{model_dir}", memoize=False)
    grader = get_model(f"pv/{model_dir}", memoize=False)  # as inspect builds the grader role: a second instance
    monkeypatch.chdir(model_dir.parent)
    relative = get_model("pv/tiny", max_batch=4, memoize=False)  # the same folder; its own batch size
    assert get_model_info(f"pv/{model_dir}") is None  # inspect builds one more model to look it up
    assert loads == [str(model_dir)]
    assert subject.api.engine is grader.api.engine is relative.api.engine
    assert subject.api.batcher is grader.api.batcher  # subject and grader requests batch together
    assert relative.api.batcher is not subject.api.batcher and relative.api.max_connections() == 4
    # extraction, `pv monitor` and `pv shift` load as the provider does: the same engine again
    assert Engine.load(model_dir) is subject.api.engine
    assert load_engine(f"pv/{model_dir}") is subject.api.engine
    assert loads == [str(model_dir)]


def test_different_load_args_load_again(model_dir: Path, loads: list[str]) -> None:
    plain = get_model(f"pv/{model_dir}", memoize=False).api.engine
    half = get_model(f"pv/{model_dir}", dtype="bfloat16", memoize=False).api.engine
    unpacked = get_model(f"pv/{model_dir}", prepack="false", memoize=False).api.engine
    assert loads == [str(model_dir)] * 3
    assert len({id(plain), id(half), id(unpacked)}) == 3
    assert str(half.dtype) == "torch.bfloat16" and unpacked.prepacked == 0 < plain.prepacked
    assert get_model(f"pv/{model_dir}", dtype="bfloat16", memoize=False).api.engine is half
    assert len(loads) == 3


def test_released_or_rewritten_models_load_again(model_dir: Path, loads: list[str]) -> None:
    first = Engine.load(model_dir)
    first.release()
    second = Engine.load(model_dir)
    assert second is not first and len(loads) == 2
    config = model_dir / "config.json"
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # weights rewritten on disk (fine-tuning)
    third = Engine.load(model_dir)
    assert third is not second and len(loads) == 3
    assert Engine.load(model_dir) is third and len(loads) == 3


def test_closing_one_model_leaves_the_shared_engine_serving_the_others(model_dir: Path, loads: list[str]) -> None:
    subject = get_model(f"pv/{model_dir}", memoize=False)
    grader = get_model(f"pv/{model_dir}", memoize=False)  # as inspect builds the grader role: a second instance
    config = GenerateConfig(max_tokens=3, temperature=0)
    before = asyncio.run(grader.generate("hi", config=config)).completion
    subject.api.close()
    subject.api.close()  # closing twice counts once
    batcher = grader.api.batcher
    assert asyncio.run(grader.generate("hi", config=config)).completion == before
    worker = batcher._thread
    assert worker is not None and worker.is_alive()
    grader.api.close()  # the last user: its worker stops, the engine stays loaded
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert get_model(f"pv/{model_dir}", memoize=False).api.engine is grader.api.engine and len(loads) == 1


def test_pv_run_loads_the_model_once_and_a_rerun_with_nothing_to_do_at_most_once(
        model_dir: Path, loads: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Collect (subject and its own grader), extract, sweep, monitor and results: one load in all."""
    import inspect_ai.model._model as inspect_models

    cfg = RunConfig(trait="evil", model=f"pv/{model_dir}", limit=2, max_tokens=4, out=tmp_path / "runs", threshold=0,
                    coherence=0, filter="independent", min_pairs=1, layers=[2], coefs=[0.0, 4.0], sweep_questions=1,
                    monitor_questions=1, seed=0, display="none")
    lines: list[str] = []
    run(cfg, log=lines.append)
    assert loads == [str(model_dir)]
    assert "[2/5] extracting persona vectors" in lines

    # a new process: nothing loaded, no model instances memoized by inspect
    monkeypatch.setattr(engine_module, "_LOADED", {})
    monkeypatch.setattr(inspect_models, "_models", {})
    loads.clear()
    lines.clear()
    run(cfg, log=lines.append)
    assert any(line.startswith("[2/5] vectors up to date") for line in lines)
    assert len(loads) <= 1
