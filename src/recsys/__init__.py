"""recsys: a PyTorch Lightning + Hydra experiment framework for deep recommender models."""

__version__ = "0.1.0"

from recsys.utils.resolvers import register_resolvers

register_resolvers()


def __getattr__(name: str):
    """``recsys.load_run`` / ``recsys.Run`` (imported on first use: ``import recsys`` stays light)."""
    if name in ("load_run", "Run"):
        from recsys import api

        return getattr(api, name)
    raise AttributeError(f"module 'recsys' has no attribute {name!r}")


__all__ = ["Run", "load_run", "__version__"]
