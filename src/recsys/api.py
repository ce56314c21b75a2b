"""The Python API of a trained run: ``run = recsys.load_run("logs/train/runs/<run>")``.

``run.cfg`` (the training config, with any ``data`` overrides), ``run.datamodule`` (set up, the cache the run
used), ``run.model`` (weights loaded, eval mode); ``run.recommend(users, k)`` and ``run.recommend_session(items,
k)`` return the rows ``recommend.py`` writes, as a pandas DataFrame in the dataset's original ids.

This module is the stable import for users and notebooks (``recsys.load_run`` / ``recsys.Run`` resolve here);
the implementation is :mod:`recsys.runs`, which the package's own tasks import. Nothing in the package imports
this module.
"""

from __future__ import annotations

from recsys.runs import Run, load_run, merge_data_overrides, model_name, resolve_checkpoint

__all__ = ["Run", "load_run", "merge_data_overrides", "model_name", "resolve_checkpoint"]
