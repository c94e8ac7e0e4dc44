"""Writing persona-vector files: safetensors with self-describing metadata, and the paper's `.pt` export.

safetensors metadata is a flat str -> str map; we store one JSON document under `pv_harness`
so nested details (counts, diagnostics, source logs) survive, plus the project version.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pv_harness import __version__

META_KEY = "pv_harness"


@dataclass
class VectorFile:
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any]


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_vectors(vectors: VectorFile, path: str | Path) -> Path:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    meta = {**vectors.metadata, "pv_harness_version": __version__}
    tensors = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in vectors.tensors.items()}
    _atomic(path, lambda tmp: save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta)}))
    return path


def read_vectors(path: str | Path) -> VectorFile:
    """Every tensor and the metadata of a file we wrote (or any safetensors file)."""
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        raw = (f.metadata() or {}).get(META_KEY)
    return VectorFile(tensors, json.loads(raw) if raw else {})


def export_pt(vectors: VectorFile, directory: str | Path, trait: str) -> list[Path]:
    """The paper's three files, `<trait>_<kind>.pt`, each one plain tensor (loads with weights_only=True)."""
    paths = []
    for kind, tensor in vectors.tensors.items():
        path = Path(directory) / f"{trait}_{kind}.pt"
        _atomic(path, lambda tmp, t=tensor: torch.save(t.detach().cpu().clone(), tmp))
        paths.append(path)
    return paths
