"""Vectors in and out of llama.cpp (GGUF control vectors), repeng, steering-vectors and the paper's .pt:
the layer mapping (our row l = block l-1 counted from 0), bit-exact round trips, and clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from pv_harness.cli import main
from pv_harness.vectors.files import VectorError, VectorFile, read_vectors, save_vectors
from pv_harness.vectors.interop import LAYER_MAPPING, export_vectors, import_vectors

LAYERS, HIDDEN = 4, 8


@pytest.fixture
def table() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(LAYERS + 1, HIDDEN)


@pytest.fixture
def vectors(table: torch.Tensor) -> VectorFile:
    return VectorFile({"response_avg_diff": table, "prompt_avg_diff": -table}, {"model": "pv/tiny", "trait": "evil"})


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A local model as far as the shape check goes: its config.json."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "llama", "num_hidden_layers": LAYERS, "hidden_size": HIDDEN}))
    return folder


def write_control_vector(path: Path, directions: dict[int, np.ndarray], model_hint: str | None = None) -> Path:
    """A control vector as repeng's ControlVector.export_gguf writes it (no depth recorded)."""
    writer = gguf.GGUFWriter(path, "controlvector")
    if model_hint is not None:
        writer.add_string("controlvector.model_hint", model_hint)
        writer.add_uint32("controlvector.layer_count", len(directions))
    for n, direction in directions.items():
        writer.add_tensor(f"direction.{n}", direction)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def fields(path: Path) -> dict:
    return {name: field.contents() for name, field in gguf.GGUFReader(path).fields.items()}


def test_block_outputs_are_hidden_states_one_further() -> None:
    """The convention every exporter rests on: model.layers[N]'s output (what llama.cpp, repeng and
    steering-vectors call N) is hidden_states[N + 1] (our row N + 1)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    outputs = {}
    for n, block in enumerate(model.model.layers):
        block.register_forward_hook(lambda _m, _i, out, n=n: outputs.__setitem__(n, out[0] if isinstance(out, tuple)
                                                                                  else out))
    with torch.no_grad():
        hidden = model(torch.tensor([[1, 2, 3]]), output_hidden_states=True).hidden_states
    for n in range(config.num_hidden_layers - 1):  # the last hidden state is after the final norm
        assert torch.equal(outputs[n], hidden[n + 1])


def test_gguf_reads_with_the_gguf_package(vectors: VectorFile, table: torch.Tensor, tmp_path: Path) -> None:
    out = export_vectors(vectors, "gguf", tmp_path / "evil.gguf", model_hint="llama")
    reader = gguf.GGUFReader(out)
    assert [t.name for t in reader.tensors] == ["direction.1", "direction.2", "direction.3"]
    for tensor in reader.tensors:
        block = int(tensor.name.split(".")[1])
        assert list(tensor.shape) == [HIDDEN]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert tensor.data.dtype == np.float32
        assert np.array_equal(tensor.data, table[block + 1].numpy())
    meta = fields(out)
    assert meta["general.architecture"] == "controlvector"
    assert meta["controlvector.model_hint"] == "llama"
    assert meta["controlvector.layer_count"] == 3
    assert meta["controlvector.pv_harness.num_layers"] == LAYERS
    assert meta["controlvector.pv_harness.layer_mapping"] == LAYER_MAPPING
    assert meta["controlvector.pv_harness.model"] == "pv/tiny"
    assert meta["controlvector.pv_harness.kind"] == "response_avg_diff"


def test_gguf_round_trip_is_bit_exact_at_the_right_rows(vectors: VectorFile, table: torch.Tensor,
                                                         tmp_path: Path) -> None:
    out = export_vectors(vectors, "gguf", tmp_path / "evil.gguf")
    back = import_vectors(out, "gguf", model="pv/tiny", shape=(LAYERS, HIDDEN))
    rows = back.tensors["response_avg_diff"]
    assert rows.shape == (LAYERS + 1, HIDDEN)
    assert torch.equal(rows[2:], table[2:])
    assert not rows[:2].any()  # embeddings, and block 0 that llama.cpp cannot hold
    assert back.metadata["imported_layers"] == [2, 3, 4]
    assert back.metadata["model"] == "pv/tiny"


def test_gguf_chosen_layers_and_layer_1_refused(vectors: VectorFile, tmp_path: Path) -> None:
    out = export_vectors(vectors, "gguf", tmp_path / "l3.gguf", rows=[3])
    assert [t.name for t in gguf.GGUFReader(out).tensors] == ["direction.2"]
    with pytest.raises(VectorError, match=r"layer 1 \(output of block 0\) cannot go into a llama.cpp"):
        export_vectors(vectors, "gguf", tmp_path / "l1.gguf", rows=[1])
    with pytest.raises(VectorError, match="layer 5 is out of range: gguf holds block outputs, layers 1..4"):
        export_vectors(vectors, "gguf", tmp_path / "l5.gguf", rows=[5])


def test_repeng_keeps_block_0_and_round_trips(vectors: VectorFile, table: torch.Tensor, tmp_path: Path) -> None:
    out = export_vectors(vectors, "repeng", tmp_path / "evil-repeng.gguf", model_hint="llama")
    assert [t.name for t in gguf.GGUFReader(out).tensors] == [f"direction.{n}" for n in range(LAYERS)]
    assert fields(out)["controlvector.layer_count"] == LAYERS
    back = import_vectors(out, "repeng", model="pv/tiny")
    assert torch.equal(back.tensors["response_avg_diff"][1:], table[1:])
    assert not back.tensors["response_avg_diff"][0].any()


def test_import_of_repengs_own_gguf(tmp_path: Path) -> None:
    """A file as repeng's ControlVector.export_gguf writes it (layer ids 1..L-1, no depth recorded)."""
    directions = {n: np.full(HIDDEN, float(n), dtype=np.float32) for n in range(LAYERS - 1, 0, -1)}
    path = write_control_vector(tmp_path / "happy.gguf", directions, model_hint="llama")
    rows = import_vectors(path, "repeng", model="pv/tiny").tensors["response_avg_diff"]
    expected = torch.zeros(LAYERS + 1, HIDDEN)
    for n in directions:
        expected[n + 1] = float(n)
    assert torch.equal(rows, expected)


def test_steering_vectors_both_ways(vectors: VectorFile, table: torch.Tensor, tmp_path: Path) -> None:
    out = export_vectors(vectors, "steering-vectors", tmp_path / "evil-sv.safetensors", kind="prompt_avg_diff")
    loaded = load_file(out)
    layer_activations = {int(k): v for k, v in loaded.items()}  # what SteeringVector takes
    assert sorted(layer_activations) == list(range(LAYERS))
    for n, row in layer_activations.items():
        assert torch.equal(row, -table[n + 1])
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["layer_type"] == "decoder_block"
    assert json.loads(meta["pv_harness"])["layer_mapping"] == LAYER_MAPPING
    back = import_vectors(out, "steering-vectors", model="pv/tiny", kind="prompt_avg_diff")
    assert torch.equal(back.tensors["prompt_avg_diff"][1:], -table[1:])


def test_pt_both_ways(vectors: VectorFile, table: torch.Tensor, tmp_path: Path) -> None:
    out = export_vectors(vectors, "pt", tmp_path / "evil_response_avg_diff.pt")
    assert torch.equal(torch.load(out, weights_only=True), table)
    back = import_vectors(out, "pt", model="pv/tiny", shape=(LAYERS, HIDDEN))
    assert torch.equal(back.tensors["response_avg_diff"], table)
    assert back.metadata["imported_layers"] == list(range(LAYERS + 1))
    with pytest.raises(VectorError, match="--layers does not apply to --to pt"):
        export_vectors(vectors, "pt", tmp_path / "x.pt", rows=[2])


def test_imports_refuse_another_models_shape(vectors: VectorFile, tmp_path: Path) -> None:
    gguf_file = export_vectors(vectors, "gguf", tmp_path / "evil.gguf")
    with pytest.raises(VectorError) as caught:
        import_vectors(gguf_file, "gguf", model="pv/big", shape=(LAYERS, 16))
    assert str(caught.value) == (f"{gguf_file} has directions of size {HIDDEN}, but pv/big's hidden size is 16: "
                                 "made for another model?")
    with pytest.raises(VectorError, match=f"was exported from a model with {LAYERS} blocks, but pv/deep has 8"):
        import_vectors(gguf_file, "gguf", model="pv/deep", shape=(8, HIDDEN))
    foreign = write_control_vector(tmp_path / "foreign.gguf", {3: np.zeros(HIDDEN, dtype=np.float32)})
    with pytest.raises(VectorError, match=r"has a direction for block 3 \(from 0\), past the model's 2 blocks"):
        import_vectors(foreign, "repeng", model="pv/shallow", shape=(2, HIDDEN))
    pt_file = export_vectors(vectors, "pt", tmp_path / "evil.pt")
    with pytest.raises(VectorError, match=rf"{pt_file} has shape \(5, 8\), but pv/deep needs \[9, 8\]"):
        import_vectors(pt_file, "pt", model="pv/deep", shape=(8, HIDDEN))


def test_gguf_with_mismatched_directions_refused(tmp_path: Path) -> None:
    path = write_control_vector(tmp_path / "odd.gguf", {1: np.zeros(HIDDEN, dtype=np.float32),
                                                         2: np.zeros(HIDDEN + 1, dtype=np.float32)})
    with pytest.raises(VectorError, match=r"odd.gguf: its directions have different sizes \[8, 9\]"):
        import_vectors(path, "gguf", model="pv/tiny")


def test_cli_export_then_import(vectors: VectorFile, table: torch.Tensor, model_folder: Path,
                                tmp_path: Path) -> None:
    source = save_vectors(vectors, tmp_path / "evil.safetensors")
    exported = tmp_path / "evil.gguf"
    result = CliRunner().invoke(main, ["vectors", "export", str(source), "--to", "gguf", "--out", str(exported),
                                       "--layers", "2,4"])
    assert result.exit_code == 0, result.output
    assert [t.name for t in gguf.GGUFReader(exported).tensors] == ["direction.1", "direction.3"]
    imported = tmp_path / "back.safetensors"
    result = CliRunner().invoke(main, ["vectors", "import", str(exported), "--from", "gguf", "--out", str(imported),
                                       "--model", str(model_folder)])
    assert result.exit_code == 0, result.output
    assert result.output == (f"wrote {imported}: response_avg_diff [{LAYERS + 1}, {HIDDEN}], 2 layers (2..4) "
                             "from gguf\n")
    back = read_vectors(imported)
    assert back.metadata["model"] == str(model_folder)
    rows = back.tensors["response_avg_diff"]
    assert torch.equal(rows[[2, 4]], table[[2, 4]])
    assert not rows[[0, 1, 3]].any()


def test_cli_model_hint_is_the_models_config_type(model_folder: Path, table: torch.Tensor, tmp_path: Path) -> None:
    source = save_vectors(VectorFile({"response_avg_diff": table}, {"model": str(model_folder)}),
                          tmp_path / "evil.safetensors")
    out = tmp_path / "evil.gguf"
    result = CliRunner().invoke(main, ["vectors", "export", str(source), "--to", "repeng", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert fields(out)["controlvector.model_hint"] == "llama"


def test_cli_bad_file_is_one_line(model_folder: Path, tmp_path: Path) -> None:
    bad = tmp_path / "notes.gguf"
    bad.write_text("not a gguf file\n")
    result = CliRunner().invoke(main, ["vectors", "import", str(bad), "--from", "gguf",
                                       "--out", str(tmp_path / "x.safetensors"), "--model", str(model_folder)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {bad} is not a GGUF file")
    assert result.stderr.count("\n") == 1


def test_a_model_gguf_is_not_a_control_vector(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, HIDDEN), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(VectorError, match=r"model.gguf is a GGUF of architecture 'llama', not a control vector"):
        import_vectors(path, "gguf", model="pv/tiny")
