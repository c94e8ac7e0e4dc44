"""The trait model: what a trait plugin supplies, validated, and the paper's file format.

A trait is everything the method needs to find a persona direction: instruction pairs that
switch the trait on and off, questions that leave room for it, and a judge prompt that scores
it. Our own files are the model's JSON; the paper's are two files per trait
(`trait_data_extract/<name>.json`, `trait_data_eval/<name>.json`) that we read and write too.
"""

from __future__ import annotations

import json
import logging
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pv_harness.atomic import atomic_write_json
from pv_harness.errors import PvError

INSTRUCTION_PAIRS = 5
DEFAULT_QUESTIONS_PER_SPLIT = 20
SLUG = re.compile(r"^[a-z][a-z0-9_]*\Z")  # \Z, not $: "evil\n" is no slug (nor a file name)
PAPER_EXTRACT_DIR = "trait_data_extract"
PAPER_EVAL_DIR = "trait_data_eval"
JUDGE_FIELDS = frozenset({"question", "answer"})

_log = logging.getLogger(__name__)


def _where(source: str | None, trait: str | None, field: str | None) -> str:
    return ", ".join(f"{k} {v!r}" for k, v in (("file", source), ("trait", trait), ("field", field)) if v)


class TraitError(ValueError, PvError):
    """A trait that cannot be used, with where it came from and which field is wrong."""

    def __init__(self, message: str, *, source: str | None = None, trait: str | None = None,
                 field: str | None = None) -> None:
        self.source, self.trait, self.field, self.message = source, trait, field, message
        where = _where(source, trait, field)
        super().__init__(f"{where}: {message}" if where else message)


def normalise_name(name: str) -> str:
    """`Power-seeking`, `APE`, `anti-sycophantic` -> `power_seeking`, `ape`, `anti_sycophantic`; an error
    when no slug can be made (a slug is also a safe file and module name)."""
    slug = re.sub(r"[\s\-]+", "_", name.strip()).lower()
    if not SLUG.match(slug):
        raise TraitError("a trait name is lower case letters, digits and underscores and starts with a letter",
                         trait=name)
    return slug


def check_judge_prompt(value: str) -> str:
    """The judge prompt is formatted with exactly `{question}` and `{answer}`; ValueError says what is wrong."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
    except ValueError as ex:
        raise ValueError(f"is not a valid format string ({ex}); write literal braces as {{{{ }}}}") from ex
    missing = JUDGE_FIELDS - fields
    if missing:
        raise ValueError(f"must contain {', '.join('{' + m + '}' for m in sorted(missing))}")
    extra = fields - JUDGE_FIELDS
    if extra:
        raise ValueError(f"may only use {{question}} and {{answer}}, found {sorted(extra)}")
    return value


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

    @model_validator(mode="after")
    def _different(self) -> InstructionPair:
        if self.pos.strip() == self.neg.strip():
            raise ValueError("pos and neg are the same instruction; neg must switch the trait off")
        return self


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
        return check_judge_prompt(value)

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


def _validate(data: Any, *, source: str | None) -> tuple[Trait | None, list[TraitError]]:
    """The Trait, or every problem with `data` (each naming file, trait and field)."""
    if isinstance(data, Trait):
        return data, []
    if not isinstance(data, dict):
        return None, [TraitError(f"expected a JSON object, got {type(data).__name__}", source=source)]
    name = data.get("name")
    try:
        return Trait.model_validate(data), []
    except ValidationError as ex:
        return None, [TraitError(error["msg"], source=source, trait=name if isinstance(name, str) else None,
                                 field=_field_path(error["loc"])) for error in ex.errors()]


def _first(problems: list[TraitError]) -> TraitError:
    """The first problem, saying how many more there are."""
    first, others = problems[0], len(problems) - 1
    if not others:
        return first
    return TraitError(f"{first.message} (and {others} more problem{'s' * (others > 1)})", source=first.source,
                      trait=first.trait, field=first.field)


def validate_trait(data: Any, *, source: str | None = None) -> Trait:
    """Validate a dict (or a Trait) into a Trait; errors name the file, trait and field."""
    trait, problems = _validate(data, source=source)
    if problems:
        raise _first(problems)
    assert trait is not None
    return trait


@dataclass
class TraitCheck:
    """What checking trait files found, without stopping at the first problem: the valid traits, every
    error, warnings (usable but unlike the paper's traits) and notes (a file name normalised, say)."""

    traits: list[Trait] = field(default_factory=list)
    errors: list[TraitError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, other: TraitCheck) -> None:
        self.traits += other.traits
        self.errors += other.errors
        self.warnings += other.warnings
        self.notes += other.notes

    def raise_first(self) -> None:
        if self.errors:
            raise _first(self.errors)


def _count_warnings(data: dict[str, Any], extract_source: str | None, eval_source: str | None) -> list[str]:
    """The paper's traits have 20 + 20 questions; other counts still run (a pilot, a test) but give noisier
    results, so they are warnings (`pv traits validate --strict` fails on them)."""
    warnings = []
    for key, source in (("extraction_questions", extract_source), ("evaluation_questions", eval_source)):
        questions = data.get(key)
        if isinstance(questions, list) and len(questions) != DEFAULT_QUESTIONS_PER_SPLIT:
            count, name = len(questions), data.get("name")
            warnings.append(f"{_where(source, name if isinstance(name, str) else None, key)}: {count} "
                            f"question{'s' * (count != 1)}, the paper's traits have {DEFAULT_QUESTIONS_PER_SPLIT}")
    return warnings


def _read_json(path: Path, trait: str | None = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as ex:
        raise TraitError("file not found", source=str(path), trait=trait) from ex
    except json.JSONDecodeError as ex:
        raise TraitError(f"not valid JSON ({ex})", source=str(path), trait=trait) from ex


def _read_into(check: TraitCheck, path: Path, trait: str | None) -> dict[str, Any] | None:
    try:
        data = _read_json(path, trait)
    except TraitError as ex:
        check.errors.append(ex)
        return None
    if not isinstance(data, dict):
        check.errors.append(TraitError(f"expected a JSON object, got {type(data).__name__}", source=str(path),
                                       trait=trait))
        return None
    return data


def load_trait(path: str | Path) -> Trait:
    """Load one trait in our own format (the Trait model's JSON)."""
    path = Path(path)
    return validate_trait(_read_json(path), source=str(path))


def save_trait(trait: Trait, path: str | Path) -> None:
    atomic_write_json(Path(path), trait.model_dump(exclude_none=True))


def check_trait_file(path: str | Path) -> TraitCheck:
    """Every problem with one trait file in our own format."""
    path, check = Path(path), TraitCheck()
    data = _read_into(check, path, None)
    if data is None:
        return check
    if "eval_prompt" in data and "name" not in data:
        check.errors.append(TraitError("this is a paper-format file: pass its folder (with trait_data_extract/ and "
                                       "trait_data_eval/) or the file inside trait_data_extract/", source=str(path)))
        return check
    trait, check.errors = _validate(data, source=str(path))
    if trait is not None:
        check.traits.append(trait)
    check.warnings += _count_warnings(data, str(path), str(path))
    return check


def check_paper_trait(
    extract_path: str | Path,
    eval_path: str | Path,
    *,
    name: str | None = None,
    description: str | None = None,
    pos_assistant_name: str | None = None,
    neg_assistant_name: str | None = None,
) -> TraitCheck:
    """Every problem with one trait in the paper's two files: both files' keys, both judge prompts, the
    question sets, the instructions. Without `name` the trait is named after the extraction file, its name
    normalised to a slug when it is not one (`APE.json` -> `ape`), which a note says."""
    extract_path, eval_path, check = Path(extract_path), Path(eval_path), TraitCheck()
    if name is None:
        name = extract_path.stem
        try:
            name = normalise_name(name)
        except TraitError:
            pass  # the model's name rule reports it below, with the file
        if name != extract_path.stem:
            check.notes.append(f"{extract_path.name}: trait name normalised to {name}")
    extract, evaluate = _read_into(check, extract_path, name), _read_into(check, eval_path, name)
    values: dict[str, Any] = {}
    for data, path, keys in ((extract, extract_path, ("instruction", "questions", "eval_prompt")),
                             (evaluate, eval_path, ("questions",))):
        if data is None:
            continue
        for key in keys:
            if key in data:
                values[f"{path}:{key}"] = data[key]
            else:
                check.errors.append(TraitError("missing key", source=str(path), trait=name, field=key))
    eval_prompt = evaluate.get("eval_prompt") if evaluate is not None else None
    if eval_prompt is not None:  # the paper's eval files repeat the judge prompt; we judge with the extract one's
        try:
            if not isinstance(eval_prompt, str):
                raise ValueError(f"must be a string, got {type(eval_prompt).__name__}")
            check_judge_prompt(eval_prompt)
        except ValueError as ex:
            check.errors.append(TraitError(str(ex), source=str(eval_path), trait=name, field="eval_prompt"))
        else:
            if isinstance(extract, dict) and isinstance(extract.get("eval_prompt"), str) and (
                    eval_prompt.strip() != extract["eval_prompt"].strip()):
                check.warnings.append(f"{_where(str(eval_path), name, 'eval_prompt')}: differs from the one in "
                                      f"{PAPER_EXTRACT_DIR}/{extract_path.name}, which is the one used")
    if len(values) < 4:  # a file unread or a key missing: the trait cannot be put together
        return check
    data = {
        "name": name,
        "description": description or f"{name.replace('_', ' ')} (from {extract_path.name})",
        "instructions": values[f"{extract_path}:instruction"],
        "extraction_questions": values[f"{extract_path}:questions"],
        "evaluation_questions": values[f"{eval_path}:questions"],
        "judge_prompt": values[f"{extract_path}:eval_prompt"],
        "pos_assistant_name": pos_assistant_name,
        "neg_assistant_name": neg_assistant_name,
    }
    trait, problems = _validate(data, source=str(extract_path))
    for problem in problems:
        # evaluation questions live in the other file: point there when that is what is wrong
        in_eval = bool(problem.field and problem.field.startswith("evaluation_questions"))
        check.errors.append(TraitError(problem.message, source=str(eval_path if in_eval else extract_path),
                                       trait=name, field=problem.field))
    if trait is not None and not check.errors:
        check.traits.append(trait)
    check.warnings += _count_warnings(data, str(extract_path), str(eval_path))
    return check


def check_paper_folder(directory: str | Path) -> TraitCheck:
    """Every problem with every trait in a folder laid out like the paper's `data_generation/`, files
    without their twin in the other sub-folder and two files that give the same trait name included."""
    directory, check = Path(directory), TraitCheck()
    extract_dir, eval_dir = directory / PAPER_EXTRACT_DIR, directory / PAPER_EVAL_DIR
    if not extract_dir.is_dir():
        check.errors.append(TraitError(f"no {PAPER_EXTRACT_DIR}/ folder", source=str(directory)))
        return check
    sources: dict[str, list[str]] = {}
    for extract_path in sorted(extract_dir.glob("*.json")):
        eval_path = eval_dir / extract_path.name
        if not eval_path.exists():
            check.errors.append(TraitError(f"no matching {PAPER_EVAL_DIR}/{extract_path.name}",
                                           source=str(extract_path), trait=extract_path.stem))
            continue
        one = check_paper_trait(extract_path, eval_path)
        for trait in one.traits:
            sources.setdefault(trait.name, []).append(extract_path.name)
        check.add(one)
    for eval_path in sorted(eval_dir.glob("*.json")):
        if not (extract_dir / eval_path.name).exists():
            check.errors.append(TraitError(f"no matching {PAPER_EXTRACT_DIR}/{eval_path.name}", source=str(eval_path),
                                           trait=eval_path.stem))
    for name, files in sources.items():
        if len(files) > 1:
            check.errors.append(TraitError(f"{' and '.join(files)} both give this trait name; rename one",
                                           source=str(extract_dir), trait=name))
            check.traits = [t for t in check.traits if t.name != name]
    return check


def check_path(path: str | Path) -> TraitCheck:
    """Every problem with a trait file of ours, a folder of them, a paper-format folder, or one paper
    `trait_data_extract/*.json` file."""
    path = Path(path)
    if path.is_dir():
        ours = sorted(path.glob("*.json"))
        if ours and not (path / PAPER_EXTRACT_DIR).is_dir():
            check = TraitCheck()
            for file in ours:
                check.add(check_trait_file(file))
            return check
        return check_paper_folder(path)
    if path.parent.name == PAPER_EXTRACT_DIR:
        return check_paper_trait(path, path.parent.parent / PAPER_EVAL_DIR / path.name)
    return check_trait_file(path)


def _loaded(check: TraitCheck, on_note: Callable[[str], None] | None) -> list[Trait]:
    check.raise_first()
    for note in check.notes:
        (on_note or _log.info)(note)
    return check.traits


def load_paper_trait(extract_path: str | Path, eval_path: str | Path, *, name: str | None = None,
                     description: str | None = None, pos_assistant_name: str | None = None,
                     neg_assistant_name: str | None = None,
                     on_note: Callable[[str], None] | None = None) -> Trait:
    """Build a Trait from the paper's two files (extraction questions from one, evaluation from the other);
    the first problem is raised (`check_paper_trait` lists them all)."""
    return _loaded(check_paper_trait(extract_path, eval_path, name=name, description=description,
                                     pos_assistant_name=pos_assistant_name, neg_assistant_name=neg_assistant_name),
                   on_note)[0]


def load_paper_folder(directory: str | Path, *, on_note: Callable[[str], None] | None = None) -> list[Trait]:
    """Every trait in a folder laid out like the paper's `data_generation/` (the two sub-folders)."""
    return _loaded(check_paper_folder(directory), on_note)


def load_any(path: str | Path, *, on_note: Callable[[str], None] | None = None) -> list[Trait]:
    """A trait file of ours, a folder of them, a paper-format folder, or one paper `trait_data_extract/*.json`."""
    return _loaded(check_path(path), on_note)
