"""The trait model: every validation rule, error messages that locate the problem, the paper's format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pv_harness import plugin_manager
from pv_harness.traits import Trait, TraitError, load_any, load_paper_folder
from pv_harness.traits.model import load_paper_trait, load_trait, save_trait, validate_trait


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
