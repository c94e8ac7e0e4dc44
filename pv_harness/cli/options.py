"""Option parsers more than one `pv` command uses."""

from __future__ import annotations

from collections.abc import Callable

import click


def number_list(cast: Callable[[str], float], what: str = "numbers"
                ) -> Callable[[click.Context, click.Parameter, str | None], list | None]:
    """A click callback for `10,15,20`: the numbers cast by `cast`, None when the option is absent."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> list | None:
        if value is None:
            return None
        try:
            return [cast(x) for x in value.split(",") if x.strip()]
        except ValueError as ex:
            raise click.BadParameter(f"a comma-separated list of {what}, got {value!r}") from ex

    return parse
