"""Data shipped with pv-harness (installed as `pv_harness.datasets`): trait definitions and training data.

Import it as `pv_harness.datasets`; the top-level folder name is only the source layout.
"""
