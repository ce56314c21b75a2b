"""``data=synthetic_graph``: the embedded default, generated from a seed (no network, no files)."""

from __future__ import annotations

from typing import Any

from recsys.data.interactions import GraphSplits
from recsys.data.synthetic import generate_synthetic_graph


class SyntheticGraphSource:
    """Graph source wrapping :func:`recsys.data.synthetic.generate_synthetic_graph`."""

    name = "synthetic_graph"

    def __init__(self, **params: Any) -> None:
        self.params = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in params.items()}

    def fingerprint(self) -> dict[str, Any]:
        return {"source": self.name, "version": 1, **self.params}

    def build(self) -> GraphSplits:
        params = dict(self.params)
        if "split" in params:
            params["split"] = tuple(params["split"])
        return generate_synthetic_graph(**params)
