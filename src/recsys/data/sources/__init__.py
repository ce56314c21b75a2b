"""One reader per data format. A graph source exposes ``name``, ``fingerprint()`` and ``build()``."""

from recsys.data.sources.base import GraphSource
from recsys.data.sources.lastfm import LastFMSource
from recsys.data.sources.movielens import MovieLensSource
from recsys.data.sources.recbole import RecBoleInterSource
from recsys.data.sources.split_folder import SplitFolderSource
from recsys.data.sources.synthetic import SyntheticGraphSource
from recsys.data.sources.tabular import TabularSource

__all__ = [
    "GraphSource",
    "LastFMSource",
    "MovieLensSource",
    "RecBoleInterSource",
    "SplitFolderSource",
    "SyntheticGraphSource",
    "TabularSource",
]
