"""The trait model: what a trait plugin supplies, validated, and the paper's file format.

A trait is everything the method needs to find a persona direction: instruction pairs that
switch the trait on and off, questions that leave room for it, and a judge prompt that scores
it. Our own files are the model's JSON; the paper's are two files per trait
(`trait_data_extract/<name>.json`, `trait_data_eval/<name>.json`) that we read and write too.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pv_harness.atomic import atomic_write_json
from pv_harness.errors import PvError

INSTRUCTION_PAIRS = 5
DEFAULT_QUESTIONS_PER_SPLIT = 20
SLUG = re.compile(r"^[a-z][a-z0-9_]*$")
PAPER_EXTRACT_DIR = "trait_data_extract"
PAPER_EVAL_DIR = "trait_data_eval"


class TraitError(ValueError, PvError):
    """A trait that cannot be used, with where it came from and which field is wrong."""

    def __init__(self, message: str, *, source: str | None = None, trait: str | None = None,
                 field: str | None = None) -> None:
        self.source, self.trait, self.field = source, trait, field
        where = ", ".join(
            f"{k} {v!r}" for k, v in (("file", source), ("trait", trait), ("field", field)) if v
        )
        super().__init__(f"{where}: {message}" if where else message)


class InstructionPair(BaseModel):
    """One system-prompt instruction that switches the trait on (`pos`) and one that switches it off."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    pos: str = Field(min_length=1)
    neg: str = Field(min_length=1)

    @field_validator("pos", "neg")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class Trait(BaseModel):
    """A validated trait definition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="slug: lower case letters, digits and underscores")
    description: str = Field(min_length=1)
    instructions: list[InstructionPair]
    extraction_questions: list[str] = Field(min_length=1)
    evaluation_questions: list[str] = Field(min_length=1)
    judge_prompt: str
    pos_assistant_name: str | None = None
    neg_assistant_name: str | None = None

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError("must be a slug (lower case letters, digits, underscores; starts with a letter)")
        return value

    @field_validator("description")
    @classmethod
    def _description_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("instructions")
    @classmethod
    def _five_pairs(cls, value: list[InstructionPair]) -> list[InstructionPair]:
        if len(value) != INSTRUCTION_PAIRS:
            raise ValueError(f"needs exactly {INSTRUCTION_PAIRS} instruction pairs, got {len(value)}")
        return value

    @field_validator("extraction_questions", "evaluation_questions")
    @classmethod
    def _questions(cls, value: list[str]) -> list[str]:
        for i, question in enumerate(value):
            if not question.strip():
                raise ValueError(f"question {i} is blank")
        seen: set[str] = set()
        for question in value:
            if question in seen:
                raise ValueError(f"duplicate question {question!r}")
            seen.add(question)
        return value

    @field_validator("judge_prompt")
    @classmethod
    def _judge_fields(cls, value: str) -> str:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as ex:
            raise ValueError(f"is not a valid format string ({ex}); write literal braces as {{{{ }}}}") from ex
        missing = {"question", "answer"} - fields
        if missing:
            raise ValueError(f"must contain {', '.join('{' + m + '}' for m in sorted(missing))}")
        extra = fields - {"question", "answer"}
        if extra:
            raise ValueError(f"may only use {{question}} and {{answer}}, found {sorted(extra)}")
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> Trait:
        shared = set(self.extraction_questions) & set(self.evaluation_questions)
        if shared:
            raise ValueError(
                f"extraction and evaluation questions must be disjoint; shared: {sorted(shared)[:3]}"
            )
        return self

    # --- helpers the tasks use -------------------------------------------------------------

    def assistant_name(self, polarity: str) -> str:
        """The persona name in `You are a/an {name} assistant.` (the trait for pos, `helpful` for neg)."""
        if polarity == "pos":
            return self.pos_assistant_name or self.name.replace("_", "-")
        if polarity == "neg":
            return self.neg_assistant_name or "helpful"
        raise ValueError(f"polarity must be 'pos' or 'neg', got {polarity!r}")

    def questions(self, version: str) -> list[str]:
        """`extract` (used to find the vector) or `eval` (held out)."""
        if version == "extract":
            return self.extraction_questions
        if version == "eval":
            return self.evaluation_questions
        raise ValueError(f"version must be 'extract' or 'eval', got {version!r}")

    def judge_message(self, question: str, answer: str) -> str:
        return self.judge_prompt.format(question=question, answer=answer)

    # --- the paper's format -------------------------------------------------------------------

    def to_paper(self, version: str) -> dict[str, Any]:
        return {
            "instruction": [pair.model_dump() for pair in self.instructions],
            "questions": self.questions(version),
            "eval_prompt": self.judge_prompt,
        }

    def paper_paths(self, directory: str | Path) -> tuple[Path, Path]:
        """`trait_data_extract/<name>.json` and `trait_data_eval/<name>.json` under `directory`."""
        directory = Path(directory)
        return directory / PAPER_EXTRACT_DIR / f"{self.name}.json", directory / PAPER_EVAL_DIR / f"{self.name}.json"

    def export_paper(self, directory: str | Path) -> tuple[Path, Path]:
        """Write the trait's two paper files under `directory` (see `paper_paths`)."""
        paths = self.paper_paths(directory)
        for path, version in zip(paths, ("extract", "eval"), strict=True):
            atomic_write_json(path, self.to_paper(version))
        return paths


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(trait)"


def validate_trait(data: Any, *, source: str | None = None) -> Trait:
    """Validate a dict (or a Trait) into a Trait; errors name the file, trait and field."""
    if isinstance(data, Trait):
        return data
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(data, dict):
        raise TraitError(f"expected a JSON object, got {type(data).__name__}", source=source)
    try:
        return Trait.model_validate(data)
    except ValidationError as ex:
        first = ex.errors()[0]
        field = _field_path(first["loc"])
        others = len(ex.errors()) - 1
        message = first["msg"] + (f" (and {others} more problem{'s' * (others > 1)})" if others else "")
        raise TraitError(message, source=source, trait=name if isinstance(name, str) else None,
                         field=field) from ex


def _read_json(path: Path, trait: str | None = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as ex:
        raise TraitError("file not found", source=str(path), trait=trait) from ex
    except json.JSONDecodeError as ex:
        raise TraitError(f"not valid JSON ({ex})", source=str(path), trait=trait) from ex


def load_trait(path: str | Path) -> Trait:
    """Load one trait in our own format (the Trait model's JSON)."""
    path = Path(path)
    return validate_trait(_read_json(path), source=str(path))


def save_trait(trait: Trait, path: str | Path) -> None:
    atomic_write_json(Path(path), trait.model_dump(exclude_none=True))


def _paper_field(data: Any, key: str, path: Path, trait: str) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise TraitError("missing key", source=str(path), trait=trait, field=key)
    return data[key]


def load_paper_trait(
    extract_path: str | Path,
    eval_path: str | Path,
    *,
    name: str | None = None,
    description: str | None = None,
    pos_assistant_name: str | None = None,
    neg_assistant_name: str | None = None,
) -> Trait:
    """Build a Trait from the paper's two files (extraction questions from one, evaluation from the other)."""
    extract_path, eval_path = Path(extract_path), Path(eval_path)
    name = name or extract_path.stem
    extract, evaluate = _read_json(extract_path, name), _read_json(eval_path, name)
    data = {
        "name": name,
        "description": description or f"{name.replace('_', ' ')} (from {extract_path.name})",
        "instructions": _paper_field(extract, "instruction", extract_path, name),
        "extraction_questions": _paper_field(extract, "questions", extract_path, name),
        "evaluation_questions": _paper_field(evaluate, "questions", eval_path, name),
        "judge_prompt": _paper_field(extract, "eval_prompt", extract_path, name),
        "pos_assistant_name": pos_assistant_name,
        "neg_assistant_name": neg_assistant_name,
    }
    try:
        return validate_trait(data, source=str(extract_path))
    except TraitError as ex:
        # evaluation questions live in the other file: point there when that is what is wrong
        source = str(eval_path) if ex.field and ex.field.startswith("evaluation_questions") else str(extract_path)
        raise TraitError(str(ex).split(": ", 1)[-1], source=source, trait=name, field=ex.field) from ex


def load_paper_folder(directory: str | Path) -> list[Trait]:
    """Every trait in a folder laid out like the paper's `data_generation/` (the two sub-folders)."""
    directory = Path(directory)
    extract_dir, eval_dir = directory / PAPER_EXTRACT_DIR, directory / PAPER_EVAL_DIR
    if not extract_dir.is_dir():
        raise TraitError(f"no {PAPER_EXTRACT_DIR}/ folder", source=str(directory))
    traits = []
    for extract_path in sorted(extract_dir.glob("*.json")):
        eval_path = eval_dir / extract_path.name
        if not eval_path.exists():
            raise TraitError(f"no matching {PAPER_EVAL_DIR}/{extract_path.name}", source=str(extract_path),
                             trait=extract_path.stem)
        traits.append(load_paper_trait(extract_path, eval_path))
    return traits


def load_any(path: str | Path) -> list[Trait]:
    """A trait file of ours, a paper-format folder, or one paper `trait_data_extract/*.json` file."""
    path = Path(path)
    if path.is_dir():
        return load_paper_folder(path)
    if path.parent.name == PAPER_EXTRACT_DIR:
        return [load_paper_trait(path, path.parent.parent / PAPER_EVAL_DIR / path.name)]
    data = _read_json(path)
    if isinstance(data, dict) and "eval_prompt" in data and "name" not in data:
        raise TraitError("this is a paper-format file: pass its folder (with trait_data_extract/ and "
                         "trait_data_eval/) or the file inside trait_data_extract/", source=str(path))
    return [validate_trait(data, source=str(path))]
