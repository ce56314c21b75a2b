"""recsys: a PyTorch Lightning + Hydra experiment framework for deep recommender models."""

__version__ = "0.1.0"

from recsys.utils.resolvers import register_resolvers

register_resolvers()
