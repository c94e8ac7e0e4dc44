"""What people look at: the pages (extraction diagnostics, steering sweeps, token monitors, the run report,
model-organism results), each module building one page's data for `pages` to render from `templates/`,
and the paper's CSV export (`paper_csv`)."""
