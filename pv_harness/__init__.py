"""pv-harness: persona vectors on inspect-ai."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pv-harness")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
