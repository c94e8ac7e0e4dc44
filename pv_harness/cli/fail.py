"""How every `pv` command reports an error the user can fix: one red line on stderr, then a non-zero exit."""

from __future__ import annotations

import sys
from typing import NoReturn

import click


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` in red on stderr and exit with `code`."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)
