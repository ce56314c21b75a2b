"""The interface every graph data source implements."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from recsys.data.interactions import GraphSplits


@runtime_checkable
class GraphSource(Protocol):
    """Something that can build a :class:`GraphSplits`.

    ``fingerprint()`` returns everything the result depends on (configuration, and for file sources the
    files' sizes/mtimes or hashes); the cache key is a hash of it, so any change rebuilds the cache.
    """

    name: str

    def fingerprint(self) -> dict[str, Any]: ...

    def build(self) -> GraphSplits: ...
