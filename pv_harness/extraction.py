"""Old import path of `pv_harness.vectors.extraction`, kept so user code written against it still runs."""

from pv_harness.vectors.extraction import *  # noqa: F403
