"""Writing persona-vector files: safetensors with self-describing metadata, and the paper's `.pt` export.

safetensors metadata is a flat str -> str map; we store one JSON document under `pv_harness`
so nested details (counts, diagnostics, source logs) survive, plus the project version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pv_harness import __version__
from pv_harness.files import atomic_write

META_KEY = "pv_harness"


@dataclass
class VectorFile:
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any]


def save_vectors(vectors: VectorFile, path: str | Path) -> Path:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    meta = {**vectors.metadata, "pv_harness_version": __version__}
    tensors = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in vectors.tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta)}))
    return path


def read_vectors(path: str | Path) -> VectorFile:
    """Every tensor and the metadata of a file we wrote (or any safetensors file)."""
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        raw = (f.metadata() or {}).get(META_KEY)
    return VectorFile(tensors, json.loads(raw) if raw else {})


def read_any(path: str | Path, kind: str = "response_avg_diff") -> VectorFile:
    """A file we wrote (all kinds, with metadata) or the paper's `.pt` (one tensor, named `kind`)."""
    from pv_harness.vectors import load_vector_rows

    if Path(path).suffix in (".pt", ".pth"):
        return VectorFile({kind: load_vector_rows(path, kind)}, {"source": "paper .pt file", "kind": kind})
    return read_vectors(path)


def export_pt(vectors: VectorFile, directory: str | Path, trait: str) -> list[Path]:
    """The paper's three files, `<trait>_<kind>.pt`, each one plain tensor (loads with weights_only=True)."""
    paths = []
    for kind, tensor in vectors.tensors.items():
        path = Path(directory) / f"{trait}_{kind}.pt"
        atomic_write(path, lambda tmp, t=tensor: torch.save(t.detach().cpu().clone(), tmp))
        paths.append(path)
    return paths
