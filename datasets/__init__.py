"""Data shipped with pv-harness (installed as `pv_harness.datasets`): trait definitions and training data.

The folder is named `datasets` in the source tree, which shadows Hugging Face `datasets` when Python
runs with the repository root on `sys.path` (`python -m ...` or `python -c ...` from the root).
Fail loudly then, instead of breaking whatever imports `datasets` later in obscure ways.
"""

if __name__ == "datasets":
    raise ImportError(
        "this is pv-harness's data folder, not Hugging Face `datasets`: Python was started from the "
        "pv-harness repository root with that folder on sys.path. Run from another folder, or use the "
        "`pv`, `inspect` and `pytest` commands, which do not put the current folder on sys.path."
    )
