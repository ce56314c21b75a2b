"""recsys: a PyTorch Lightning + Hydra experiment framework for deep recommender models."""

__version__ = "0.1.0"

from recsys.utils.resolvers import register_resolvers

register_resolvers()


def __getattr__(name: str):
    """``recsys.load_run`` / ``recsys.Run`` from :mod:`recsys.api`, imported on first use (PEP 562): every
    ``import recsys.<module>`` runs this package first, so an eager import would load the whole stack (torch,
    Lightning, the models) for ``recsys.errors`` too. The one function-local import of a task in the package
    (allowed by the ``no-task-imports`` contract of ``pyproject.toml``)."""
    if name in ("load_run", "Run"):
        from recsys import api

        return getattr(api, name)
    raise AttributeError(f"module 'recsys' has no attribute {name!r}")


__all__ = ["Run", "load_run", "__version__"]
