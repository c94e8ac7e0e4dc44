"""Example pv-harness plugin: registers the `overconfident` trait from files in the paper's format."""

from importlib.resources import as_file, files

from pv_harness.hookspecs import hookimpl
from pv_harness.traits.model import load_paper_folder


@hookimpl
def register_traits(register):
    with as_file(files(__package__) / "data") as folder:
        for trait in load_paper_folder(folder):
            register(trait)
