"""Writing pages: one Jinja2 environment over `reports/templates/`, where every page extends `base.html`.

Autoescaping is on, so any text from a log, a config or a model is escaped; the only HTML that comes in
from Python is what a library renders (plotly figures, pandas tables), passed as `Markup`. Pages work
offline: plotly.js is written once beside them (`plotly.min.js`) instead of fetched.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from pv_harness.atomic import atomic_write_text

if TYPE_CHECKING:
    import jinja2
    import pandas as pd
    from plotly.graph_objects import Figure

PLOTLY_JS = "plotly.min.js"


def number(value: float | None, spec: str, missing: str = "-") -> str:
    """`value` formatted by `spec`, or `missing` when there is no number (None or NaN: unscored, empty)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


@functools.cache
def environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("pv_harness.reports", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = number
    return env


def figure_html(fig: Figure) -> Markup:
    """A plotly figure as a `div`, for a page written with `plotly=True` (which loads plotly.js)."""
    return Markup(fig.to_html(full_html=False, include_plotlyjs=False))


def table_html(frame: pd.DataFrame) -> Markup:
    """A pandas table (pandas escapes the cells); missing values show as `-`."""
    return Markup(frame.to_html(index=False, na_rep="-"))


def write_page(path: str | Path, template: str, *, plotly: bool = False, **context: Any) -> Path:
    """Render `template` with `context` to `path`; with `plotly`, put plotly.js beside it (once)."""
    path = Path(path)
    if plotly:
        target = path.parent / PLOTLY_JS
        if not target.exists():
            from plotly.offline import get_plotlyjs

            atomic_write_text(target, get_plotlyjs())
    page = environment().get_template(template).render(plotly_js=PLOTLY_JS if plotly else None, **context)
    return atomic_write_text(path, page)
