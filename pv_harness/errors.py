"""The base of every pv-harness error, so callers can catch the project's own errors in one clause.

Each error also keeps its builtin base (`ValueError`, `RuntimeError`), so `except ValueError` still works.
Import-light on purpose: every module may import it.
"""

from __future__ import annotations


class PvError(Exception):
    """An error pv-harness raises on purpose, with a message meant for the user."""
