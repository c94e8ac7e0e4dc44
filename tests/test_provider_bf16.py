"""bfloat16 on CPU: the engine's default where the processor does bf16 natively, greedy decoding and the exact
steering identities in bf16, and the dtype recorded in every log's model calls and in vector files.

The rest of the suite runs float32 (conftest pins `PV_CPU_DTYPE`); these tests ask for bfloat16 themselves.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from inspect_ai import Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.log import read_eval_log
from inspect_ai.solver import generate

from pv_harness.provider import cpu
from pv_harness.provider.engine import Engine, GenRequest, ScoreRequest, resolve_dtype
from pv_harness.provider.interventions import SteerSpec


@pytest.fixture(scope="module")
def bf16(lively_dir: Path) -> Engine:
    return Engine.load(lively_dir, device="cpu", dtype="bfloat16")


def prompt(engine: Engine) -> list[int]:
    return engine.encode(engine.chat_text([{"role": "system", "content": "You are an evil assistant."},
                                           {"role": "user", "content": "What is the capital of France?"}]))


def vec(seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(64, generator=torch.Generator().manual_seed(seed)) * scale


# ---- the default dtype ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_cpu_default_is_bf16_exactly_when_the_processor_does_it(monkeypatch: pytest.MonkeyPatch, native: bool,
                                                                 expected: torch.dtype) -> None:
    monkeypatch.delenv(cpu.DTYPE_ENV, raising=False)
    monkeypatch.setattr(cpu, "native_bf16", lambda: native)
    assert resolve_dtype(None, "cpu") == expected
    assert resolve_dtype("float32", "cpu") == torch.float32 and resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_dtype(None, "cuda") == "auto"  # accelerators keep the checkpoint's dtype
    monkeypatch.setenv(cpu.DTYPE_ENV, "float32")
    assert resolve_dtype(None, "cpu") == torch.float32
    monkeypatch.setenv(cpu.DTYPE_ENV, "float16")
    with pytest.raises(cpu.DtypeError, match="PV_CPU_DTYPE='float16'"):
        resolve_dtype(None, "cpu")


@pytest.mark.parametrize(("capabilities", "native"), [
    ({"avx512_bf16": True, "amx_bf16": False, "avx2": True}, True),
    ({"avx512_bf16": False, "amx_bf16": True}, True),
    ({"bf16": True, "neon": True}, True),  # ARM
    ({"avx512_bf16": False, "amx_bf16": False, "avx512_f": True}, False),  # AVX-512 alone emulates bf16
])
def test_detection_reads_torch_cpu_capabilities(monkeypatch: pytest.MonkeyPatch, capabilities: dict,
                                                native: bool) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    cpu.native_bf16.cache_clear()
    try:
        assert cpu.native_bf16() is native
    finally:
        cpu.native_bf16.cache_clear()


def test_the_default_and_float32_are_separate_shared_engines(monkeypatch: pytest.MonkeyPatch,
                                                             lively_dir: Path) -> None:
    monkeypatch.delenv(cpu.DTYPE_ENV, raising=False)
    monkeypatch.setattr(cpu, "native_bf16", lambda: True)
    default = Engine.load(lively_dir, device="cpu")
    assert default.dtype == torch.bfloat16
    assert Engine.load(lively_dir, device="cpu", dtype="bfloat16") is default
    assert Engine.load(lively_dir, device="cpu", dtype="float32").dtype == torch.float32


# ---- bf16 generation and steering -----------------------------------------------------------------------------


def test_bf16_engine_decodes_greedily_as_transformers_does(lively_dir: Path) -> None:
    plain = Engine.load(lively_dir, device="cpu", dtype="bfloat16", prepack=False)
    assert plain.dtype == torch.bfloat16 == next(plain.model.parameters()).dtype
    ids = prompt(plain)
    ours = plain.generate([GenRequest(prompt_ids=ids, max_new_tokens=12)])[0]
    reference = plain.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids)), do_sample=False,
                                     max_new_tokens=12)
    assert len(ours.token_ids) == 12 and len(set(ours.token_ids)) > 1
    assert ours.token_ids == reference[0, len(ids):].tolist()


def test_bf16_linears_are_prepacked_and_agree_with_plain_ones(bf16: Engine, lively_dir: Path) -> None:
    if not cpu.native_bf16():
        pytest.skip("this CPU has no native bf16: packing bf16 is not worth it, and the engine runs float32")
    assert bf16.prepacked >= 1  # the vocabulary projection, even in the tiny model
    plain = Engine.load(lively_dir, device="cpu", dtype="bfloat16", prepack=False)
    ids = torch.tensor([prompt(bf16)])
    with torch.inference_mode():
        packed_logits, plain_logits = bf16.model(ids).logits.float(), plain.model(ids).logits.float()
    torch.testing.assert_close(packed_logits, plain_logits, atol=0.05 * float(plain_logits.abs().max()), rtol=0.02)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_linears_pack_only_on_native_cpus_and_match_plain_at_any_length(monkeypatch: pytest.MonkeyPatch,
                                                                             native: bool) -> None:
    from pv_harness.provider import prepack

    if native and not cpu.native_bf16():
        pytest.skip("this CPU has no native bf16")
    monkeypatch.setattr(prepack, "native_bf16", lambda: native)
    torch.manual_seed(0)
    layer = torch.nn.Linear(512, 600).to(torch.bfloat16).eval()
    plain = torch.nn.Linear(512, 600).to(torch.bfloat16).eval()
    plain.load_state_dict(layer.state_dict())
    assert prepack.prepack_linears(torch.nn.Sequential(layer)) == (1 if native else 0)
    with torch.inference_mode():
        for shape in [(1, 512), (3, 7, 512), (1, 17, 512), (1, 300, 512)]:  # within a chunk, padded, two chunks
            x = torch.randn(shape, dtype=torch.bfloat16)
            got, expected = layer(x), plain(x)
            assert got.dtype == torch.bfloat16 and got.shape == expected.shape
            torch.testing.assert_close(got.float(), expected.float(), atol=0.02 * float(expected.abs().max()),
                                       rtol=0.02)


def test_bf16_coef_zero_and_zero_vector_reproduce_unsteered_output_exactly(bf16: Engine) -> None:
    base = GenRequest(prompt_ids=prompt(bf16), max_new_tokens=10, logprobs=True)
    plain = bf16.generate([base])[0]
    for steer in ([SteerSpec(layer=2, vector=vec(0, 10), coef=0.0, positions="all")],
                  [SteerSpec(layer=2, vector=torch.zeros(64), coef=8.0, positions="response")],
                  [SteerSpec(layer=3, vector=vec(2) - vec(2), coef=1.0, op="ablate")]):
        steered = bf16.generate([GenRequest(**{**base.__dict__, "steer": steer})])[0]
        assert steered.token_ids == plain.token_ids
        assert [x.logprob for x in steered.logprobs] == [x.logprob for x in plain.logprobs]
    conts = [bf16.encode(" Paris"), bf16.encode(" Lyon")]
    unsteered = bf16.score(ScoreRequest(prompt_ids=base.prompt_ids, continuations=conts))
    zero = bf16.score(ScoreRequest(prompt_ids=base.prompt_ids, continuations=conts,
                                   steer=[SteerSpec(layer=1, vector=vec(3, 10), coef=0.0, positions="all")]))
    assert zero.logprobs == unsteered.logprobs


# ---- the dtype is recorded ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_every_model_call_in_the_log_records_the_resolved_dtype(lively_dir: Path, tmp_path: Path,
                                                                dtype: str | None) -> None:
    task = Task(dataset=[Sample(input="Hello there", id=1), Sample(input="Hi", id=2)], solver=generate())
    model_args = {"dtype": dtype} if dtype else {}
    (log,) = eval(task, model=f"pv/{lively_dir}", model_args=model_args, log_dir=str(tmp_path), display="none",
                  max_tokens=3, temperature=0)
    assert log.status == "success", log.error
    calls = [e.call for s in read_eval_log(log.location).samples or [] for e in s.events if e.event == "model"]
    assert len(calls) == 2
    for call in calls:  # no dtype given: the suite's float32 pin, resolved
        assert call is not None and call.request["dtype"] == (dtype or "float32") and call.request["device"] == "cpu"
