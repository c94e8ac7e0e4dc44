"""Old import path of `pv_harness.organisms.training`, kept so user code written against it still runs."""

from pv_harness.organisms.training import *  # noqa: F403
