"""Vectors in and out of other steering tools: llama.cpp control vectors (GGUF), repeng, steering-vectors,
and the paper's `.pt`.

Layer numbers (ARCHITECTURE.md section 9). Ours: row l = `hidden_states[l]` = output of decoder block l,
blocks counted from 1 (row 0 = embeddings), steered by adding to the output of `model.layers[l-1]`.
The three other tools all count blocks from 0 and add to the output of that block, so their index N is our
row N + 1. Checked against each tool's own code:

- llama.cpp, `common/common.cpp: llama_control_vector_load_one`: tensor `direction.N` (F32, 1-D, N >= 1;
  `direction.0` makes the whole file fail to load) goes to `data[(N-1) * n_embd]`;
  `src/llama-adapter.cpp: llama_control_vector_apply` copies that slot into `cvec.tensors[N]`, and every
  model graph calls `cvec.apply_to(ctx0, cur, il)` at the end of its block loop `for il in 0..n_layer-1`,
  i.e. adds `direction.N` to the output of block il = N counted from 0. Our row 1 therefore cannot go into a
  llama.cpp file; rows 2..L become `direction.1`..`direction.(L-1)`.
- repeng, `repeng/extract.py: ControlVector.export_gguf / import_gguf, batched_get_hiddens` and
  `repeng/control.py: ControlModel`: layer id i reads `hidden_states[i + 1]` and controls
  `model_layer_list(model)[i]`; its GGUF writes `direction.i` with `controlvector.model_hint` (the HF
  `config.model_type`) and `controlvector.layer_count` (the number of directions). Its own training skips
  block 0, so its files also load in llama.cpp; our repeng export keeps block 0 (row 1) as `direction.0`.
- steering-vectors, `steering_vectors/steering_vector.py: SteeringVector.patch_activations` with
  `layer_matching.py: collect_matching_layers`: `layer_activations[N]` is added by a forward hook on the
  N-th `decoder_block` module (`model.layers.{N}`, from 0). The library has no file format: we write a
  safetensors file of tensors named `"N"` ([hidden] each) whose metadata holds the mapping;
  `SteeringVector({int(k): v for k, v in safetensors.torch.load_file(path).items()})` rebuilds it.

Every exported file carries the mapping in its metadata (GGUF: `controlvector.pv_harness.*`), and an import
writes our safetensors file with zero rows where the other file had no layer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pv_harness.atomic import atomic_write
from pv_harness.vectors.files import DEFAULT_KIND, VectorError, VectorFile, read_any, save_vectors

if TYPE_CHECKING:
    import torch

FORMATS = ("gguf", "repeng", "steering-vectors", "pt")
ARCH = "controlvector"
LAYER_MAPPING = (
    "direction.N / repeng layer id N / steering-vectors layer_activations[N] = output of decoder block N "
    "counted from 0 (HF model.layers[N], llama.cpp il = N) = pv-harness row N+1 = hidden_states[N+1]"
)
STEERING_VECTORS_LAYER_TYPE = "decoder_block"


def block_of(row: int) -> int:
    """The 0-based block index (llama.cpp, repeng, steering-vectors) our hidden-states row `row` is the output of."""
    return row - 1


def row_of(block: int) -> int:
    """Our hidden-states row for a 0-based block index."""
    return block + 1


# --- export ------------------------------------------------------------------------------------------------


def export_vectors(vectors: VectorFile, fmt: str, out: str | os.PathLike[str], *, kind: str = DEFAULT_KIND,
                   rows: Sequence[int] | None = None, model_hint: str | None = None) -> Path:
    """Write `vectors[kind]` as another tool's file; `rows` (ours, hidden-states numbers) default to every row
    the format can hold. `model_hint` is repeng's `model_type` (default: the file's model name)."""
    if kind not in vectors.tensors:
        raise VectorError(f"the vector file has no {kind!r} (it has {sorted(vectors.tensors)}); pick one with --kind")
    table = vectors.tensors[kind]
    if table.ndim != 2:
        raise VectorError(f"{kind!r} has shape {tuple(table.shape)}; export needs one row per layer [layers+1, hidden]")
    out = Path(out)
    if fmt == "pt":
        if rows is not None:
            raise VectorError("--layers does not apply to --to pt: the paper's .pt holds every layer")
        return _write_pt(table, out)
    num_layers = table.shape[0] - 1
    lowest = 2 if fmt == "gguf" else 1
    chosen = list(range(lowest, num_layers + 1)) if rows is None else sorted(set(rows))
    if not chosen:
        raise VectorError(f"no layers to export: give --layers within {lowest}..{num_layers}")
    for row in chosen:
        if row == 1 and fmt == "gguf":
            raise VectorError("layer 1 (output of block 0) cannot go into a llama.cpp control vector (llama.cpp "
                              f"refuses direction.0): use --to repeng, or layers 2..{num_layers}")
        if not 1 <= row <= num_layers:
            raise VectorError(f"layer {row} is out of range: {fmt} holds block outputs, layers 1..{num_layers}")
    directions = {block_of(row): table[row] for row in chosen}
    model = str(vectors.metadata.get("model") or "unknown")
    described = {"model": model, "kind": kind, "num_layers": num_layers, "layer_mapping": LAYER_MAPPING,
                 "rows": chosen}
    if fmt in ("gguf", "repeng"):
        return _write_gguf(directions, out, model_hint or model, described)
    if fmt == "steering-vectors":
        return _write_steering_vectors(directions, out, described)
    raise VectorError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def _write_pt(table: torch.Tensor, out: Path) -> Path:
    import torch

    return atomic_write(out, lambda tmp: torch.save(table.detach().to(torch.float32).cpu().clone(), tmp))


def _write_gguf(directions: dict[int, torch.Tensor], out: Path, model_hint: str, described: dict[str, Any]) -> Path:
    import gguf
    import torch

    def write(tmp: str) -> None:
        writer = gguf.GGUFWriter(tmp, ARCH)
        writer.add_name(f"{described['model']} {described['kind']}")
        writer.add_string(f"{ARCH}.model_hint", model_hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(directions))
        writer.add_string(f"{ARCH}.pv_harness.layer_mapping", LAYER_MAPPING)
        writer.add_string(f"{ARCH}.pv_harness.model", described["model"])
        writer.add_string(f"{ARCH}.pv_harness.kind", described["kind"])
        writer.add_uint32(f"{ARCH}.pv_harness.num_layers", described["num_layers"])
        for block, row in sorted(directions.items()):
            writer.add_tensor(f"direction.{block}", row.detach().to(torch.float32).cpu().numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    return atomic_write(out, write)


def _write_steering_vectors(directions: dict[int, torch.Tensor], out: Path, described: dict[str, Any]) -> Path:
    import torch
    from safetensors.torch import save_file

    tensors = {str(block): row.detach().to(torch.float32).contiguous().cpu() for block, row in directions.items()}
    meta = {"layer_type": STEERING_VECTORS_LAYER_TYPE, "pv_harness": json.dumps(described)}
    return atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata=meta))


# --- import ------------------------------------------------------------------------------------------------


def import_vectors(path: str | os.PathLike[str], fmt: str, *, model: str, kind: str = DEFAULT_KIND,
                   shape: tuple[int, int] | None = None) -> VectorFile:
    """Another tool's vector as our `[L+1, H]` tensor `kind` (zero rows where it has no layer), for `model`.

    `shape` is the model's (num_layers, hidden) when known; a file that disagrees with it, or with itself, is
    refused. Without it, a depth the file does not record is taken as its deepest layer."""
    import torch

    from pv_harness.vectors.activations import LAYER_CONVENTION

    file = Path(path).expanduser()
    if not file.is_file():
        raise VectorError(f"vector file not found: {file}")
    if fmt == "pt":
        table = read_any(file, kind).tensors[kind]
        if table.ndim != 2:
            raise VectorError(f"{file} holds a tensor of shape {tuple(table.shape)}; expected [layers+1, hidden]")
        if shape is not None and tuple(table.shape) != (shape[0] + 1, shape[1]):
            raise VectorError(f"{file} has shape {tuple(table.shape)}, but {model} needs "
                              f"[{shape[0] + 1}, {shape[1]}] (layers 0..{shape[0]}, hidden {shape[1]})")
        rows = list(range(table.shape[0]))
    else:
        if fmt in ("gguf", "repeng"):
            directions, recorded = _read_gguf(file)
        elif fmt == "steering-vectors":
            directions, recorded = _read_steering_vectors(file)
        else:
            raise VectorError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
        sizes = {int(v.shape[0]) for v in directions.values()}
        if len(sizes) != 1:
            raise VectorError(f"{file}: its directions have different sizes {sorted(sizes)}")
        hidden = sizes.pop()
        deepest = max(directions) + 1
        if shape is not None and hidden != shape[1]:
            raise VectorError(f"{file} has directions of size {hidden}, but {model}'s hidden size is {shape[1]}: "
                              "made for another model?")
        if shape is not None and recorded is not None and recorded != shape[0]:
            raise VectorError(f"{file} was exported from a model with {recorded} blocks, but {model} has "
                              f"{shape[0]}: made for another model?")
        num_layers = recorded if recorded is not None else (shape[0] if shape is not None else deepest)
        if deepest > num_layers:
            raise VectorError(f"{file} has a direction for block {deepest - 1} (from 0), past the model's "
                              f"{num_layers} blocks")
        table = torch.zeros(num_layers + 1, hidden, dtype=torch.float32)
        for block, row in directions.items():
            table[row_of(block)] = row
        rows = sorted(row_of(block) for block in directions)
    if not bool(torch.isfinite(table).all()):
        raise VectorError(f"{file} contains NaN or infinite values")
    meta = {"model": model, "layer_convention": LAYER_CONVENTION, "source": f"imported from {fmt} file {file}",
            "layer_mapping": LAYER_MAPPING, "imported_layers": rows}
    return VectorFile({kind: table}, meta)


def _read_gguf(file: Path) -> tuple[dict[int, torch.Tensor], int | None]:
    """The `direction.N` tensors of a control-vector GGUF, and the model depth when we wrote the file."""
    import gguf
    import torch

    try:
        reader = gguf.GGUFReader(file)
    except Exception as ex:
        first = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
        raise VectorError(f"{file} is not a GGUF file: {first}") from ex
    fields = {name: field.contents() for name, field in reader.fields.items()}
    arch = fields.get("general.architecture")
    if arch != ARCH:
        raise VectorError(f"{file} is a GGUF of architecture {arch!r}, not a control vector ({ARCH!r})")
    directions: dict[int, torch.Tensor] = {}
    for tensor in reader.tensors:
        prefix, _, index = tensor.name.partition(".")
        if prefix != "direction" or not index.isdigit():
            raise VectorError(f"{file} has a tensor {tensor.name!r}; a control vector holds only direction.N")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32 or len(tensor.shape) != 1:
            raise VectorError(f"{file}: {tensor.name} is {tensor.tensor_type.name} of shape "
                              f"{list(tensor.shape)}; a direction is one F32 row")
        directions[int(index)] = torch.from_numpy(tensor.data.copy())
    if not directions:
        raise VectorError(f"{file} has no direction.N tensors")
    depth = fields.get(f"{ARCH}.pv_harness.num_layers")
    return directions, int(depth) if depth is not None else None


def _read_steering_vectors(file: Path) -> tuple[dict[int, torch.Tensor], int | None]:
    """A steering-vectors safetensors file (tensors named by block index), and the depth when we wrote it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}
            meta = f.metadata() or {}
    except SafetensorError as ex:
        raise VectorError(f"{file} is not a safetensors file: {ex}") from ex
    layer_type = meta.get("layer_type", STEERING_VECTORS_LAYER_TYPE)
    if layer_type != STEERING_VECTORS_LAYER_TYPE:
        raise VectorError(f"{file} steers {layer_type!r} layers; only decoder_block outputs map onto ours")
    directions = {}
    for name, tensor in tensors.items():
        if not name.isdigit() or tensor.ndim != 1:
            raise VectorError(f"{file}: tensor {name!r} of shape {list(tensor.shape)}; expected tensors named by "
                              "block index (0, 1, ...), each one [hidden] row")
        directions[int(name)] = tensor.float()
    if not directions:
        raise VectorError(f"{file} holds no tensors")
    depth = json.loads(meta["pv_harness"]).get("num_layers") if "pv_harness" in meta else None
    return directions, depth


def model_shape(model: str) -> tuple[int, int] | None:
    """(num_hidden_layers, hidden_size) from a local model's config.json, or None when there is none here."""
    config = _local_config(model)
    if config is None or "num_hidden_layers" not in config or "hidden_size" not in config:
        return None
    return int(config["num_hidden_layers"]), int(config["hidden_size"])


def model_type(model: str) -> str | None:
    """A local model's HF `config.model_type` (what repeng puts in `controlvector.model_hint`)."""
    config = _local_config(model)
    return config.get("model_type") if config else None


def _local_config(model: str) -> dict[str, Any] | None:
    from pv_harness.errors import PvError
    from pv_harness.models import local_path

    try:
        config = Path(local_path(model)) / "config.json"
    except PvError:
        return None
    return json.loads(config.read_text(encoding="utf-8")) if config.is_file() else None


def import_to_file(path: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str], *, model: str,
                   kind: str = DEFAULT_KIND) -> tuple[Path, VectorFile]:
    """`import_vectors` checked against `model`'s shape when it is a local model, saved as our safetensors."""
    vectors = import_vectors(path, fmt, model=model, kind=kind, shape=model_shape(model))
    return save_vectors(vectors, Path(out)), vectors
