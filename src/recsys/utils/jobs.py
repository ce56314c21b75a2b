"""The job folders of a sweep: one finder for the results table, the comparison and the sweep's curves."""

from __future__ import annotations

from pathlib import Path


def find_jobs(root: Path) -> list[Path]:
    """Job folders under ``root``: folders holding a ``metrics.json`` (written by ``train.py`` at the end) or a
    ``.hydra/overrides.yaml`` (written by Hydra when a job starts: failed and running jobs too), leaving out
    submitit's and wandb's folders; numeric names in numeric order, then the rest by path."""
    found = {p.parent for p in root.rglob("metrics.json")}
    found |= {p.parent.parent for p in root.rglob(".hydra/overrides.yaml") if p.parent.parent != root}
    found = {p for p in found if ".submitit" not in p.parts and "wandb" not in p.parts}

    def key(p: Path) -> tuple:
        return tuple((0, int(x), "") if x.isdigit() else (1, 0, x) for x in p.relative_to(root).parts)

    return sorted(found, key=key)
