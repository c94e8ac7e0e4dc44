"""Shared fixtures: a tiny random-weight model (seconds to build) and the real embedded model."""

from __future__ import annotations

from pathlib import Path

import pytest

from pv_harness import models


def smollm2_dir() -> Path:
    """The installed embedded model; `make test` installs it before running pytest."""
    if not models.is_installed("smollm2"):
        pytest.fail("the embedded model is not installed: run `pv model install smollm2` (make test does)")
    return models.model_dir("smollm2")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer Llama with random weights and SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def lively_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with weights scaled up: its greedy output changes from token to token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 if "embed" in name else 3 / p.shape[-1] ** 0.5))
    folder = tmp_path_factory.mktemp("lively-llama")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True, scope="session")
def _float32_engines():
    """The engine's CPU default is bfloat16 on processors that do it natively; tests compare with float32
    references (exactly), so they run float32 unless they ask for bfloat16 (tests/test_provider_bf16.py)."""
    from pv_harness.provider.cpu import DTYPE_ENV

    patch = pytest.MonkeyPatch()
    patch.setenv(DTYPE_ENV, "float32")
    yield
    patch.undo()


@pytest.fixture(autouse=True, scope="session")
def _test_logs_stay_out_of_the_users_log_dir(tmp_path_factory: pytest.TempPathFactory):
    """Evals that name no log dir write to INSPECT_LOG_DIR: point it at a temporary folder, not ./logs."""
    patch = pytest.MonkeyPatch()
    patch.setenv("INSPECT_LOG_DIR", str(tmp_path_factory.mktemp("inspect-logs")))
    yield
    patch.undo()
