"""Layer discovery and the hidden-states convention on every supported architecture (tiny random models)."""

from __future__ import annotations

import pytest
import torch

from pv_harness.provider.interventions import Interventions, MonitorSpec, SteerSpec, steer_all
from pv_harness.provider.layers import LayerDiscoveryError, check_layer, find_layers

H = 32
TINY = dict(hidden_size=H, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=128, max_position_embeddings=64)


def _llama_like(name: str, config_name: str | None = None):
    import transformers

    config = getattr(transformers, f"{config_name or name}Config")(**TINY)
    if name.startswith("Gemma") or name.startswith("Qwen3"):
        config.head_dim = 8
    return getattr(transformers, f"{name}ForCausalLM")(config)


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_embd=H, n_layer=3, n_head=4, vocab_size=128, n_positions=64))


def _neox():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    return GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=H, intermediate_size=64, num_hidden_layers=3,
                                            num_attention_heads=4, vocab_size=128, max_position_embeddings=64))


def _gemma3_multimodal():
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text = {**TINY, "head_dim": 8}
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
    return Gemma3ForConditionalGeneration(config)


BUILDERS = {
    "llama": lambda: _llama_like("Llama"),
    "qwen2": lambda: _llama_like("Qwen2"),
    "qwen3": lambda: _llama_like("Qwen3"),
    "mistral": lambda: _llama_like("Mistral"),
    "gemma2": lambda: _llama_like("Gemma2"),
    "gemma3-text": lambda: _llama_like("Gemma3", "Gemma3Text"),
    "gemma3-multimodal": _gemma3_multimodal,
    "gpt2": _gpt2,
    "gpt-neox": _neox,
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def model(request: pytest.FixtureRequest):
    torch.manual_seed(0)
    return BUILDERS[request.param]().eval()


def _inputs() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [0, 0, 11, 12, 13, 14]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


def test_monitor_hooks_read_exactly_hidden_states(model) -> None:
    """Monitoring layer l reads hidden_states[l], for l = 0 (embeddings) .. L (after the final norm)."""
    layers = find_layers(model)
    assert layers.num_layers == 3
    gen = torch.Generator().manual_seed(1)
    specs = [MonitorSpec(layer=l, vector=torch.randn(H, generator=gen)) for l in range(4)]  # noqa: E741
    iv = Interventions(layers, [[], []], [specs, specs])
    inputs = _inputs()
    iv.set_step([0, 1], prompt=inputs["attention_mask"], response=torch.zeros_like(inputs["attention_mask"]))
    with torch.no_grad(), iv.hooks():
        out = model(**inputs, output_hidden_states=True)
    values = iv.monitor_values()
    assert len(out.hidden_states) == 4
    for row in range(2):
        for layer, spec in enumerate(specs):
            unit = spec.vector / spec.vector.norm()
            expected = float(out.hidden_states[layer][row, -1].float() @ unit)
            assert values[row][layer] == [pytest.approx(expected, rel=1e-4, abs=1e-4)]


def test_steering_layer_l_edits_hidden_states_l(model) -> None:
    """Adding v at layer l (< L) shifts hidden_states[l] by exactly coef * v at every position."""
    layers = find_layers(model)
    inputs = _inputs()
    with torch.no_grad():
        base = model(**inputs, output_hidden_states=True).hidden_states
    v = torch.randn(H, generator=torch.Generator().manual_seed(2))
    for layer in range(3):
        seen: list[torch.Tensor] = []
        # the input of the next block (or of the final norm) is the stream after our hook
        nxt = layers.blocks[layer] if layer < 3 else layers.final_norm
        with torch.no_grad(), steer_all(model, [SteerSpec(layer=layer, vector=v, coef=2.0)], layers):
            # registered after ours, so for layer 0 (a pre-hook on block 0) it sees the steered input
            handle = nxt.register_forward_pre_hook(
                lambda m, a, k, seen=seen: seen.append((a[0] if a else k["hidden_states"]).clone()),
                with_kwargs=True)
            try:
                model(**inputs)
            finally:
                handle.remove()
        real = inputs["attention_mask"].bool()
        diff = (seen[0] - base[layer])[real]
        assert torch.allclose(diff, (2.0 * v).expand_as(diff), atol=1e-4), layer


def test_unknown_architecture_is_a_clear_error() -> None:
    with pytest.raises(LayerDiscoveryError, match="cannot find the decoder blocks of Linear: looked for model.layers,"):
        find_layers(torch.nn.Linear(2, 2))


def test_check_layer_range() -> None:
    assert check_layer(0, 30) == 0 and check_layer(30, 30) == 30
    for bad in (-1, 31):
        message = rf"^layer {bad} is out of range: this model has hidden-states layers 0\.\.30 \(0 = embeddings"
        with pytest.raises(ValueError, match=message):
            check_layer(bad, 30)
    with pytest.raises(ValueError, match="layer must be an integer, got 2.0"):
        check_layer(2.0, 30)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_engine_runs_every_architecture(arch: str, tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batched decoding with the KV cache, steering, monitoring and scoring, on each layout."""
    from pv_harness.provider.engine import Engine, GenRequest, ScoreRequest

    monkeypatch.setitem(TINY, "vocab_size", len(tokenizer))
    torch.manual_seed(0)
    if arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        model = GPT2LMHeadModel(GPT2Config(n_embd=H, n_layer=3, n_head=4, vocab_size=len(tokenizer), n_positions=64))
    elif arch == "gpt-neox":
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        model = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=H, intermediate_size=64, num_hidden_layers=3,
                                                 num_attention_heads=4, vocab_size=len(tokenizer),
                                                 max_position_embeddings=64))
    else:
        model = BUILDERS[arch]()
    engine = Engine(model.eval(), tokenizer)
    v = torch.randn(H, generator=torch.Generator().manual_seed(3))
    prompts = [engine.encode(engine.chat_text([{"role": "user", "content": q}])) for q in ("Hi", "What is 2+2, then?")]
    reqs = [GenRequest(prompt_ids=prompts[0], max_new_tokens=5, logprobs=True,
                       steer=[SteerSpec(layer=1, vector=v, coef=2.0, positions="all")],
                       monitor=[MonitorSpec(layer=3, vector=v)]),
            GenRequest(prompt_ids=prompts[1], max_new_tokens=5, logprobs=True)]
    together = engine.generate(reqs)
    for t, r in zip(together, reqs, strict=True):
        alone = engine.generate([r])[0]
        assert t.token_ids == alone.token_ids
        assert [x.logprob for x in t.logprobs] == pytest.approx([x.logprob for x in alone.logprobs], abs=1e-4)
    assert len(together[0].monitor[0]["projections"]) == 5
    conts = [engine.continuation_ids(engine.chat_text([{"role": "user", "content": "Hi"}]), prompts[0], w)
             for w in ("1", "23")]
    manual = []
    for c in conts:
        with torch.no_grad():
            logp = torch.log_softmax(engine.model(torch.tensor([prompts[0] + c])).logits[0].float(), -1)
        manual.append(sum(float(logp[len(prompts[0]) - 1 + j, t]) for j, t in enumerate(c)))
    got = engine.score(ScoreRequest(prompt_ids=prompts[0], continuations=conts)).logprobs
    assert got == pytest.approx(manual, abs=1e-4)
