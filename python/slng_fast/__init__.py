"""slng-fast: a self-hostable gateway for real-time speech."""

from slng_fast._native import __version__

__all__ = ["__version__"]
