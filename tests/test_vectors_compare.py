"""`pv vectors compare`: every distinct file is compared under a label that tells it apart from the others."""

from __future__ import annotations

from pathlib import Path

import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from pv_harness.cli import main
from pv_harness.cli.vectors import labels


def vector(path: Path, rows: list[list[float]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"response_avg_diff": torch.tensor(rows)}, str(path))
    return path


def test_two_runs_files_of_one_name_are_both_compared(tmp_path: Path) -> None:
    first = vector(tmp_path / "run1" / "evil.safetensors", [[1.0, 0.0], [0.0, 2.0]])
    second = vector(tmp_path / "run2" / "evil.safetensors", [[1.0, 1.0], [0.0, -3.0]])
    result = CliRunner().invoke(main, ["vectors", "compare", str(first), str(second)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["layer  run1/evil~run2/evil", "    0                0.707",
                                          "    1               -1.000"]


def test_fewer_than_two_distinct_files_is_an_error(tmp_path: Path) -> None:
    only = vector(tmp_path / "evil.safetensors", [[1.0, 0.0]])
    result = CliRunner().invoke(main, ["vectors", "compare", str(only), str(tmp_path / "." / "evil.safetensors")])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (f"error: nothing to compare: {only} is one file; give at least two different vector "
                             "files\n")


def test_labels_are_the_shortest_that_distinguish() -> None:
    assert list(labels([Path("/x/evil.safetensors"), Path("/x/sycophantic.safetensors")]).values()) == [
        "evil", "sycophantic"]
    assert list(labels([Path("/a/run/evil.safetensors"), Path("/b/run/evil.safetensors")]).values()) == [
        "a/run/evil", "b/run/evil"]
    assert list(labels([Path("/x/evil.safetensors"), Path("/x/evil.pt")]).values()) == ["evil.safetensors",
                                                                                       "evil.pt"]


def test_info_shows_both_heldout_aurocs_and_their_n(tmp_path: Path) -> None:
    from pv_harness.vectors.files import VectorFile, save_vectors

    diagnostics = [{"layer": 0}, {"layer": 1, "heldout_auroc": 0.625, "heldout_auroc_context": 0.875,
                                  "heldout_n": {"pos": 20, "neg": 19}}]
    path = save_vectors(VectorFile(tensors={"response_avg_diff": torch.tensor([[3.0, 4.0], [0.0, 2.0]])},
                                   metadata={"diagnostics": diagnostics,
                                             "baseline": {"kind": "response_avg_diff", "neg": [0.5, -1.25],
                                                          "pos": [1.5, 2.0]}}), tmp_path / "evil.safetensors")
    result = CliRunner().invoke(main, ["vectors", "info", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-3:] == [
        "layer  norm(response_avg_diff)  held-out AUROC: in context  text only    n  neg mean  pos mean",
        "    0               5.000                           -          -    -     0.500     1.500",
        "    1               2.000                       0.875      0.625   39    -1.250     2.000"]
    assert "baseline" not in result.stdout  # shown as columns, not as one long metadata line
