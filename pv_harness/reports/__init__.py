"""Pages people look at: extraction diagnostics, steering sweeps, token monitors, the pipeline report.

Pages work offline: plotly.js is written once beside them (`plotly.min.js`) instead of fetched.
"""

from __future__ import annotations

from pathlib import Path

from pv_harness.atomic import atomic_write_text

PLOTLY_JS = "plotly.min.js"


def plotly_script(directory: str | Path) -> str:
    """Put plotly.js in `directory` (once) and return the tag that loads it from there."""
    target = Path(directory) / PLOTLY_JS
    if not target.exists():
        from plotly.offline import get_plotlyjs

        atomic_write_text(target, get_plotlyjs())
    return f'<script src="{PLOTLY_JS}"></script>'


def figure_div(fig) -> str:
    """A plotly figure as a `<div>` for a page that loads plotly.js with `plotly_script`."""
    return fig.to_html(full_html=False, include_plotlyjs=False)
