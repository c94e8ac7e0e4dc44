"""`pv traits import`: a paper `data_generation/` folder becomes one installable plugin package, checked
first (every problem listed, nothing written), names normalised, outputs never over inputs; the package,
installed with pip, lists its traits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pv_harness import plugin_manager
from pv_harness.cli import main
from pv_harness.traits.model import load_paper_folder, validate_trait

JUDGE = "Rate the trait 0-100, or REFUSAL.\nQuestion: {question}\nAnswer: {answer}"


def paper_trait(folder: Path, file_name: str, tag: str, **extract_changes: object) -> None:
    """One trait in the paper's layout: trait_data_extract/FILE and trait_data_eval/FILE."""
    instructions = [{"pos": f"Be {tag} {i}.", "neg": f"Never be {tag} {i}."} for i in range(5)]
    for side in ("extract", "eval"):
        data = {"instruction": instructions, "questions": [f"{tag} {side} question {i}?" for i in range(20)],
                "eval_prompt": JUDGE}
        if side == "extract":
            data.update(extract_changes)
        path = folder / f"trait_data_{side}" / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))


@pytest.fixture
def data_generation(tmp_path: Path) -> Path:
    folder = tmp_path / "data_generation"
    paper_trait(folder, "APE.json", "ape-like")
    paper_trait(folder, "anti-sycophantic.json", "blunt")
    return folder


def test_import_writes_one_package_of_every_trait(data_generation: Path, tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    result = CliRunner().invoke(main, ["traits", "import", str(data_generation), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "APE.json: trait name normalised to ape\n" in result.output
    assert "anti-sycophantic.json: trait name normalised to anti_sycophantic\n" in result.output
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "README.md", "pv_trait_data_generation/__init__.py", "pv_trait_data_generation/anti_sycophantic.json",
        "pv_trait_data_generation/ape.json", "pyproject.toml", "trait_data_eval/anti_sycophantic.json",
        "trait_data_eval/ape.json", "trait_data_extract/anti_sycophantic.json", "trait_data_extract/ape.json"]
    assert ('[project.entry-points.pv_harness]\ndata_generation = "pv_trait_data_generation"'
            in (out / "pyproject.toml").read_text())
    # the package's paper files are the originals' content under the normalised names
    def contents(folder: Path) -> dict[str, dict]:
        return {t.name: t.model_dump(exclude={"description"}) for t in load_paper_folder(folder)}

    assert contents(out) == contents(data_generation)
    ape = validate_trait(json.loads((out / "pv_trait_data_generation" / "ape.json").read_text()))
    assert ape.extraction_questions == [f"ape-like extract question {i}?" for i in range(20)]
    assert ape.instructions[0].neg == "Never be ape-like 0." and ape.judge_prompt == JUDGE


def test_import_names_the_plugin(data_generation: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["traits", "import", str(data_generation), "--plugin", "Paper-Traits"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pv-trait-paper-traits" / "pv_trait_paper_traits" / "ape.json").exists()


def test_import_lists_every_problem_and_writes_nothing(data_generation: Path, tmp_path: Path) -> None:
    paper_trait(data_generation, "bad.json", "bad", eval_prompt="no placeholders",
                questions=[f"q{i}?" for i in range(19)])
    (data_generation / "trait_data_eval" / "APE.json").unlink()
    out = tmp_path / "pkg"
    result = CliRunner().invoke(main, ["traits", "import", str(data_generation), "-o", str(out)])
    assert result.exit_code == 1
    invalid = [line for line in result.output.splitlines() if line.startswith("invalid  ")]
    assert invalid == [
        f"invalid  file '{data_generation}/trait_data_extract/APE.json', trait 'APE': no matching "
        "trait_data_eval/APE.json",
        f"invalid  file '{data_generation}/trait_data_extract/bad.json', trait 'bad', field 'judge_prompt': "
        "Value error, must contain {answer}, {question}",
    ]
    assert (f"warning  file '{data_generation}/trait_data_extract/bad.json', trait 'bad', field "
            "'extraction_questions': 19 questions, the paper's traits have 20") in result.output
    assert result.output.rstrip().endswith("error: nothing was written")
    assert not out.exists()


def test_import_never_overwrites_without_force_nor_deletes_its_input(data_generation: Path, tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    refused = CliRunner().invoke(main, ["traits", "import", str(data_generation), "-o", str(out)])
    assert refused.exit_code == 1 and "already exists and is not empty" in refused.output
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    forced = CliRunner().invoke(main, ["traits", "import", str(data_generation), "-o", str(out), "--force"])
    assert forced.exit_code == 0, forced.output
    assert not (out / "mine.txt").exists()
    # the input inside the output folder: --force would delete it, so it is refused
    inside = CliRunner().invoke(main, ["traits", "import", str(data_generation), "-o", str(tmp_path), "--force"])
    assert inside.exit_code == 1 and f"{data_generation} is inside {tmp_path}" in inside.output
    assert (data_generation / "trait_data_extract" / "APE.json").exists()


def test_the_imported_package_installs_and_lists_its_traits(data_generation: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "pkg"
    assert CliRunner().invoke(main, ["traits", "import", str(data_generation), "-o", str(out)]).exit_code == 0
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(out)], check=True, capture_output=True)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv(plugin_manager.LOAD_ENV, raising=False)
    plugin_manager.reset()
    try:
        listed = CliRunner().invoke(main, ["traits", "list", "--json"])
        assert listed.exit_code == 0, listed.output
        mine = {t["name"]: t["plugin"] for t in json.loads(listed.stdout) if t["plugin"] == "data_generation"}
        assert mine == {"ape": "data_generation", "anti_sycophantic": "data_generation"}
        assert plugin_manager.get_trait("anti_sycophantic").assistant_name("pos") == "anti-sycophantic"
    finally:
        plugin_manager.reset()
        sys.modules.pop("pv_trait_data_generation", None)
