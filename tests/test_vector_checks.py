"""One vector check for every reader: steering, `pv monitor`, `pv shift` and `pv screen` refuse a bad vector (not
finite, not floating point, the wrong hidden size or depth, zero where a direction is needed) with the same one-line
message, before any model runs; no output holds NaN; a `.pt` file that would need unpickling is refused without
torch's advice to unpickle it; and a `PvError` reaching the command line is one `error:` line, never a traceback."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from pv_harness.cli import main
from pv_harness.provider.interventions import SteeringError, parse_steer
from pv_harness.vectors.files import VectorError, check_vector

HIDDEN, LAYERS, LAYER = 64, 4, 2


def rows(seed: int = 0) -> torch.Tensor:
    return torch.randn(LAYERS + 1, HIDDEN, generator=torch.Generator().manual_seed(seed))


def nan_rows() -> torch.Tensor:
    r = rows()
    r[2, 5], r[3, 0] = float("nan"), float("inf")
    return r


BAD = {  # file -> (its tensor, what every reader says after "<path> (response_avg_diff) ")
    "nan": (nan_rows(), "contains NaN or infinite values (layers 2, 3): re-extract it"),
    "narrow": (torch.randn(LAYERS + 1, 32), f"has size 32, but this model's hidden size is {HIDDEN}"),
    "deep": (torch.randn(31, HIDDEN), "has 31 rows; this model needs 5 (one per hidden-states layer 0..4): "
                                      "made for another model?"),
    "ints": (torch.ones(LAYERS + 1, HIDDEN, dtype=torch.int32),
             "holds int32 values; a vector must be floating point: was it saved from the right tensor?"),
    "zero": (torch.zeros(LAYERS + 1, HIDDEN), f"is all zeros at layer {LAYER}: there is no direction to project onto"),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("bad-vectors")
    out = {}
    for name, (tensor, message) in BAD.items():
        path = folder / f"{name}.safetensors"
        save_file({"response_avg_diff": tensor}, str(path))
        out[name] = (path, f"{path} (response_avg_diff) {message}")
    return out


def dataset(tmp_path: Path) -> Path:
    data = tmp_path / "data.jsonl"
    lines = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                           {"role": "assistant", "content": f"Answer {i}."}]} for i in range(2)]
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return data


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result) -> str:
    """The error line a command ended with (model loading may print progress bars before it), checked to be one."""
    assert result.exit_code == 1 and type(result.exception) is SystemExit, result.output  # not an uncaught error
    assert "Traceback" not in result.output
    return result.stderr.splitlines()[-1]


# --- the check itself -----------------------------------------------------------------------------------------


def test_check_vector_returns_the_row_or_every_row_as_float32() -> None:
    r = rows().double()
    assert torch.equal(check_vector(r, HIDDEN, LAYERS, "v", layer=LAYER), r[LAYER].float())
    assert torch.equal(check_vector(r, HIDDEN, LAYERS, "v"), r.float())
    assert check_vector(r, HIDDEN, LAYERS, "v").dtype == torch.float32
    one = torch.arange(HIDDEN, dtype=torch.float32)
    assert torch.equal(check_vector(one, HIDDEN, LAYERS, "v", layer=3), one)  # [hidden]: the same at every layer
    assert torch.equal(check_vector(torch.randn(9, HIDDEN).abs() + 1, HIDDEN, None, "v", layer=8).sign(),
                       torch.ones(HIDDEN))  # num_layers=None: any depth
    zero = torch.zeros(LAYERS + 1, HIDDEN)
    assert torch.equal(check_vector(zero, HIDDEN, LAYERS, "v", layer=1), torch.zeros(HIDDEN))  # steering may add 0


@pytest.mark.parametrize(("tensor", "kwargs", "message"), [
    (torch.zeros(2, 3, 4), {}, "v has shape (2, 3, 4); expected [layers+1, hidden] or [hidden]"),
    (torch.ones(HIDDEN, dtype=torch.int64), {}, "v holds int64 values; a vector must be floating point"),
    (torch.ones(LAYERS, HIDDEN), {}, "v has 4 rows; this model needs 5"),
    (torch.ones(LAYERS + 1, HIDDEN), {"layer": 5}, "v has rows for layers 0..4; layer 5 is out of range"),
    (torch.ones(HIDDEN + 1), {}, "v has size 65, but this model's hidden size is 64"),
    (torch.full((HIDDEN,), float("nan")), {}, "v contains NaN or infinite values: re-extract it"),
    (nan_rows(), {"layer": 0}, "v contains NaN or infinite values (layers 2, 3): re-extract it"),  # any row
    (torch.zeros(HIDDEN), {"direction": True}, "v is all zeros: there is no direction to project onto"),
    (torch.zeros(LAYERS + 1, HIDDEN), {"direction": True}, "v is all zeros: there is no direction to project onto"),
])
def test_check_vector_refuses(tensor: torch.Tensor, kwargs: dict, message: str) -> None:
    with pytest.raises(VectorError) as info:
        check_vector(tensor, HIDDEN, LAYERS, "v", **kwargs)
    assert str(info.value).startswith(message)


# --- every reader says the same ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD)
def test_every_command_refuses_a_bad_vector_with_the_same_line(name: str, bad_files, tiny_model_dir: Path,
                                                               tmp_path: Path) -> None:
    path, message = bad_files[name]
    model = f"pv/{tiny_model_dir}"
    shift = invoke("shift", "--base", model, "--model", model, "--vector", path, "--layer", LAYER, "--trait", "evil",
                   "--json")
    assert refused(shift) == f"error: {message}" and shift.stdout == ""
    data = dataset(tmp_path)
    screen = invoke("screen", data, "--vector", path, "--model", model, "--layer", LAYER, "--max-new-tokens", 2)
    assert refused(screen) == f"error: {message}" and not (tmp_path / "data.screen.jsonl").exists()
    monitor = invoke("monitor", "hello", "--vector", path, "--model", model, "--layer", LAYER)
    assert refused(monitor) == f"error: monitor: {message}"
    if name != "zero":  # steering adds exactly nothing with a zero vector, and allows it
        with pytest.raises(SteeringError) as info:
            parse_steer([{"vector": str(path), "layer": LAYER, "coef": 1.0}], hidden=HIDDEN, num_layers=LAYERS)
        assert str(info.value) == f"steer: {message}"


def test_non_finite_activations_are_refused_never_written(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path,
                                                          tmp_path: Path) -> None:
    from pv_harness.organisms import shift as shift_module

    path = tmp_path / "v.safetensors"
    save_file({"response_avg_diff": rows()}, str(path))
    model = f"pv/{tiny_model_dir}"
    monkeypatch.setattr(shift_module, "prompt_last_mean",
                        lambda engine, questions: torch.full((LAYERS + 1, HIDDEN), float("nan")))
    result = invoke("shift", "--base", model, "--model", model, "--vector", path, "--layer", LAYER, "--trait", "evil",
                    "--json")
    assert result.stdout == ""
    assert refused(result) == (f"error: the activations of {model} or {model} at layer {LAYER} are not finite (NaN or "
                               "infinite), so there is no shift to report: check the models load and run in this dtype")

    def projections(engine, prompts, answers, layer, vector, batch_size=8):
        return [1.0, float("nan")]

    monkeypatch.setattr(shift_module, "response_projections", projections)
    result = invoke("screen", dataset(tmp_path), "--vector", path, "--model", model, "--layer", LAYER,
                    "--max-new-tokens", 2)
    assert refused(result) == (f"error: the model's activations at layer {LAYER} are not finite (NaN "
                               "or infinite) for example(s) 1: no scores to write")
    assert not (tmp_path / "data.screen.jsonl").exists() and not (tmp_path / "data.screen.summary.json").exists()


# --- files that will not load ----------------------------------------------------------------------------------


def test_a_pt_file_that_needs_unpickling_is_one_line_without_torchs_advice(tmp_path: Path) -> None:
    pickled = tmp_path / "pickled.pt"
    torch.save({"response_avg_diff": rows(), "when": datetime.datetime(2025, 1, 1)}, pickled)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    for path, message in [
        (pickled, f"{pickled} holds Python objects other than tensors (datetime.datetime), and pv-harness never "
                  "unpickles a file; save the tensor alone with torch.save(tensor, path), or a dict of tensors"),
        (garbage, f"{garbage} is not a tensor file written by torch.save (UnpicklingError: Unsupported operand 110)"),
    ]:
        result = invoke("monitor", "hello", "--vector", path, "--layer", 1)  # reads the file for its model name
        assert (refused(result), result.stdout, result.stderr.count("\n")) == (f"error: {message}", "", 1)


def test_a_pv_error_from_any_command_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 16)
    result = invoke("monitor", "hello", "--vector", broken, "--layer", 1)
    assert refused(result).startswith(f"error: {broken} is not a safetensors file: ")
    assert result.stdout == "" and result.stderr.count("\n") == 1
