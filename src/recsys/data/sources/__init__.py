"""One reader per data format. A graph source exposes ``name``, ``fingerprint()`` and ``build()``."""

from recsys.data.sources.base import GraphSource
from recsys.data.sources.synthetic import SyntheticGraphSource

__all__ = ["GraphSource", "SyntheticGraphSource"]
