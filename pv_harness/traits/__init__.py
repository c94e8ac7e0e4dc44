"""Stage 1, traits: the trait model and the paper's file format, generating a trait with a model, and
writing one as an installable plugin package."""

from pv_harness.traits.model import (
    INSTRUCTION_PAIRS,
    PAPER_EVAL_DIR,
    PAPER_EXTRACT_DIR,
    InstructionPair,
    Trait,
    TraitCheck,
    TraitError,
    check_path,
    load_any,
    load_paper_folder,
    load_paper_trait,
    load_trait,
    normalise_name,
    save_trait,
    validate_trait,
)

__all__ = [
    "INSTRUCTION_PAIRS",
    "PAPER_EVAL_DIR",
    "PAPER_EXTRACT_DIR",
    "InstructionPair",
    "Trait",
    "TraitCheck",
    "TraitError",
    "check_path",
    "load_any",
    "load_paper_folder",
    "load_paper_trait",
    "load_trait",
    "normalise_name",
    "save_trait",
    "validate_trait",
]
