"""The trait model: every validation rule, error messages that locate the problem, the paper's format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pv_harness import plugin_manager
from pv_harness.cli import main
from pv_harness.traits import Trait, TraitError, load_any, load_paper_folder
from pv_harness.traits.model import (
    check_paper_folder,
    check_paper_trait,
    load_paper_trait,
    load_trait,
    normalise_name,
    save_trait,
    validate_trait,
)


def trait_data(**changes: object) -> dict:
    data = {
        "name": "grumpy",
        "description": "Answering in a bad-tempered, irritable way.",
        "instructions": [{"pos": f"Be grumpy {i}.", "neg": f"Be cheerful {i}."} for i in range(5)],
        "extraction_questions": [f"Extraction question {i}?" for i in range(20)],
        "evaluation_questions": [f"Evaluation question {i}?" for i in range(20)],
        "judge_prompt": "Rate grumpiness 0-100 or REFUSAL.\nQ: {question}\nA: {answer}\nNumber only.",
    }
    data.update(changes)
    return data


def test_valid_trait_and_defaults() -> None:
    trait = validate_trait(trait_data())
    assert trait.assistant_name("pos") == "grumpy"
    assert trait.assistant_name("neg") == "helpful"
    assert trait.questions("eval")[0] == "Evaluation question 0?"
    assert trait.judge_message("q?", "a.").endswith("Q: q?\nA: a.\nNumber only.")


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"name": "Grumpy Cat"}, "name", "slug"),
        ({"name": "1grumpy"}, "name", "slug"),
        ({"description": "  "}, "description", "blank"),
        ({"instructions": [{"pos": "a", "neg": "b"}] * 4}, "instructions", "exactly 5"),
        ({"instructions": [{"pos": "a", "neg": "b"}] * 4 + [{"pos": " ", "neg": "b"}]}, "instructions.4.pos", "blank"),
        ({"instructions": [{"pos": "a", "neg": "b"}] * 4 + [{"pos": "a"}]}, "instructions.4.neg", "required"),
        ({"extraction_questions": []}, "extraction_questions", "at least 1"),
        ({"evaluation_questions": ["ok?", ""]}, "evaluation_questions", "question 1 is blank"),
        ({"extraction_questions": ["same?", "same?"]}, "extraction_questions", "duplicate"),
        ({"evaluation_questions": ["Extraction question 3?"]}, "(trait)", "disjoint"),
        ({"judge_prompt": "Rate {question} only"}, "judge_prompt", "{answer}"),
        ({"judge_prompt": "Rate {question} {answer} {trait}"}, "judge_prompt", "only use"),
        ({"judge_prompt": "Rate {question} {answer} {"}, "judge_prompt", "format string"),
        ({"colour": "blue"}, "colour", "Extra inputs"),
    ],
)
def test_each_rule_names_trait_and_field(changes: dict, field: str, fragment: str) -> None:
    with pytest.raises(TraitError) as info:
        validate_trait(trait_data(**changes), source="my/file.json")
    err = info.value
    assert err.field == field
    assert err.source == "my/file.json"
    assert err.trait == changes.get("name", "grumpy")
    assert fragment in str(err)
    assert "my/file.json" in str(err) and field in str(err)


def test_missing_field() -> None:
    data = trait_data()
    del data["judge_prompt"]
    with pytest.raises(TraitError, match="trait 'grumpy', field 'judge_prompt': Field required"):
        validate_trait(data)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(TraitError, match=r"broken\.json': not valid JSON \(Expecting property name"):
        load_trait(bad)
    with pytest.raises(TraitError, match=r"missing\.json': file not found$"):
        load_trait(tmp_path / "missing.json")


def test_own_format_round_trip(tmp_path: Path) -> None:
    trait = validate_trait(trait_data(pos_assistant_name="grumpy old"))
    save_trait(trait, tmp_path / "grumpy.json")
    assert load_trait(tmp_path / "grumpy.json") == trait
    assert load_any(tmp_path / "grumpy.json") == [trait]


def test_paper_format_round_trip(tmp_path: Path) -> None:
    trait = validate_trait(trait_data())
    extract, evaluate = trait.export_paper(tmp_path)
    assert extract == tmp_path / "trait_data_extract" / "grumpy.json"
    paper = json.loads(extract.read_text())
    assert set(paper) == {"instruction", "questions", "eval_prompt"}
    assert paper["questions"] == trait.extraction_questions
    assert json.loads(evaluate.read_text())["questions"] == trait.evaluation_questions
    back = load_paper_trait(extract, evaluate, description=trait.description)
    assert back == trait
    assert [t.name for t in load_paper_folder(tmp_path)] == ["grumpy"]
    assert load_any(extract)[0].extraction_questions == trait.extraction_questions


def test_paper_errors_point_at_the_right_file(tmp_path: Path) -> None:
    trait = validate_trait(trait_data())
    extract, evaluate = trait.export_paper(tmp_path)
    paper = json.loads(evaluate.read_text())
    paper["questions"] = trait.extraction_questions[:2]  # overlaps the extraction set
    evaluate.write_text(json.dumps(paper))
    shared = r"extraction and evaluation questions must be disjoint; shared: \['Extraction question 0\?', "
    with pytest.raises(TraitError, match=shared):
        load_paper_folder(tmp_path)
    paper["questions"] = ["fine?", " "]
    evaluate.write_text(json.dumps(paper))
    with pytest.raises(TraitError) as info:
        load_paper_folder(tmp_path)
    assert info.value.source == str(evaluate) and info.value.field == "evaluation_questions"
    del paper["questions"]
    evaluate.write_text(json.dumps(paper))
    missing = r"trait_data_eval/grumpy\.json', trait 'grumpy', field 'questions': missing key$"
    with pytest.raises(TraitError, match=missing):
        load_paper_folder(tmp_path)
    evaluate.unlink()
    with pytest.raises(TraitError, match=r"trait_data_extract/grumpy\.json', trait 'grumpy': "
                                         r"no matching trait_data_eval/grumpy\.json$"):
        load_paper_folder(tmp_path)


BUNDLED = ["evil", "sycophantic", "hallucinating", "paternalism", "deception", "manipulativeness",
           "corrigibility", "power_seeking", "alignment_theatre"]


def test_bundled_traits_are_all_valid_and_complete() -> None:
    plugin_manager.reset()
    traits = plugin_manager.traits()
    assert set(BUNDLED) <= set(traits)
    for name in BUNDLED:
        trait: Trait = traits[name]
        assert len(trait.instructions) == 5
        assert len(trait.extraction_questions) == 20 and len(trait.evaluation_questions) == 20
        assert "REFUSAL" in trait.judge_prompt
        assert plugin_manager.trait_plugin(name) == name


# --- checking files: every problem, names normalised, both judge prompts ----------------------------


def paper_files(folder: Path, file_name: str, **changes: object) -> tuple[Path, Path]:
    """Write the grumpy trait in the paper's format as `file_name` (extract, eval); `changes` edit the
    files' JSON: `extract_<key>` / `eval_<key>` set a key, None deletes it."""
    trait = validate_trait(trait_data())
    extract, evaluate = trait.export_paper(folder)
    paths = (extract.rename(extract.with_name(file_name)), evaluate.rename(evaluate.with_name(file_name)))
    for path, side in zip(paths, ("extract", "eval"), strict=True):
        data = json.loads(path.read_text())
        for key, value in changes.items():
            if key.startswith(f"{side}_"):
                if value is None:
                    del data[key.removeprefix(f"{side}_")]
                else:
                    data[key.removeprefix(f"{side}_")] = value
        path.write_text(json.dumps(data))
    return paths


def test_slug_is_a_whole_path_component() -> None:
    with pytest.raises(TraitError, match="field 'name'"):
        validate_trait(trait_data(name="grumpy\n"))
    assert normalise_name(" Anti-Sycophantic\n") == "anti_sycophantic"
    with pytest.raises(TraitError):
        normalise_name("../grumpy")


def test_identical_pos_and_neg_are_refused() -> None:
    pairs = [{"pos": f"Be grumpy {i}.", "neg": f"Be cheerful {i}."} for i in range(4)]
    with pytest.raises(TraitError) as info:
        validate_trait(trait_data(instructions=[*pairs, {"pos": "Be grumpy.", "neg": " Be grumpy. "}]))
    assert info.value.field == "instructions.4"
    assert "pos and neg are the same instruction" in str(info.value)


def test_paper_file_names_are_normalised(tmp_path: Path) -> None:
    paper_files(tmp_path, "APE.json")
    paper_files(tmp_path, "anti-sycophantic.json")
    check = check_paper_folder(tmp_path)
    assert [t.name for t in check.traits] == ["ape", "anti_sycophantic"] and check.errors == []
    assert check.notes == ["APE.json: trait name normalised to ape",
                           "anti-sycophantic.json: trait name normalised to anti_sycophantic"]
    notes: list[str] = []
    assert [t.name for t in load_paper_folder(tmp_path, on_note=notes.append)] == ["ape", "anti_sycophantic"]
    assert notes == check.notes


def test_a_folder_check_reports_every_problem(tmp_path: Path) -> None:
    same = [{"pos": "Same.", "neg": "Same."}] + [{"pos": f"Be grumpy {i}.", "neg": f"Not {i}."} for i in range(4)]
    paper_files(tmp_path, "bad_prompts.json", eval_eval_prompt="Rate {question} only")
    paper_files(tmp_path, "few.json", extract_questions=["Only one?"], extract_instruction=same)
    paper_files(tmp_path, "missing.json", extract_eval_prompt=None)
    paper_files(tmp_path, "good.json")
    (tmp_path / "trait_data_eval" / "orphan.json").write_text("{}")
    check = check_paper_folder(tmp_path)
    extract, evaluate = tmp_path / "trait_data_extract", tmp_path / "trait_data_eval"
    assert [(e.source, e.trait, e.field, e.message) for e in check.errors] == [
        (str(evaluate / "bad_prompts.json"), "bad_prompts", "eval_prompt", "must contain {answer}"),
        (str(extract / "few.json"), "few", "instructions.0",
         "Value error, pos and neg are the same instruction; neg must switch the trait off"),
        (str(extract / "missing.json"), "missing", "eval_prompt", "missing key"),
        (str(evaluate / "orphan.json"), "orphan", None, "no matching trait_data_extract/orphan.json"),
    ]
    assert check.warnings == [f"file '{extract / 'few.json'}', trait 'few', field 'extraction_questions': "
                              "1 question, the paper's traits have 20"]
    assert [t.name for t in check.traits] == ["good"]
    with pytest.raises(TraitError, match=r"bad_prompts\.json', .*must contain \{answer\} \(and 3 more problems\)$"):
        load_paper_folder(tmp_path)


def test_two_files_with_one_trait_name_are_refused(tmp_path: Path) -> None:
    paper_files(tmp_path, "Grumpy.json")
    paper_files(tmp_path, "grumpy.json")
    check = check_paper_folder(tmp_path)
    assert [str(e) for e in check.errors] == [
        f"file '{tmp_path / 'trait_data_extract'}', trait 'grumpy': Grumpy.json and grumpy.json both give this "
        "trait name; rename one"]
    assert check.traits == []


def test_differing_judge_prompts_warn(tmp_path: Path) -> None:
    extract, evaluate = paper_files(tmp_path, "grumpy.json", eval_eval_prompt="Other {question} {answer}")
    check = check_paper_trait(extract, evaluate)
    assert check.errors == [] and check.warnings == [
        f"file '{evaluate}', trait 'grumpy', field 'eval_prompt': differs from the one in "
        "trait_data_extract/grumpy.json, which is the one used"]


def test_cli_validate_lists_every_problem(tmp_path: Path) -> None:
    paper_files(tmp_path, "bad_prompts.json", eval_eval_prompt="Rate {question} only")
    paper_files(tmp_path, "missing.json", extract_eval_prompt=None)
    paper_files(tmp_path, "Good-One.json")
    result = CliRunner().invoke(main, ["traits", "validate", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert "Good-One.json: trait name normalised to good_one" in lines
    assert f"ok  good_one  ({tmp_path})" in lines
    assert sum(line.startswith("invalid  ") for line in lines) == 2
    assert "field 'eval_prompt': must contain {answer}" in result.output and "missing key" in result.output
    ours = tmp_path / "ours"
    ours.mkdir()
    save_trait(validate_trait(trait_data(evaluation_questions=["Held out?"])), ours / "grumpy.json")
    assert CliRunner().invoke(main, ["traits", "validate", str(ours)]).exit_code == 0
    strict = CliRunner().invoke(main, ["traits", "validate", "--strict", str(ours)])
    assert strict.exit_code == 1
    assert "warning  file" in strict.output and "'evaluation_questions': 1 question, the paper's" in strict.output
