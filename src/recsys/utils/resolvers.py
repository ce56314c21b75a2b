"""OmegaConf resolvers that recsys configs use (registered when ``recsys`` is imported).

Both read the rank Lightning reads from the environment (``RANK``, ``LOCAL_RANK``, ``SLURM_PROCID``), which
is known before Hydra starts the job. Every process that torchrun, srun or Lightning's DDP launcher starts
runs Hydra in the same run folder; ``configs/hydra/default.yaml`` uses these so that only rank 0 writes
``.hydra/`` and each rank logs to its own file (Hydra's multirun and Lightning's DDP launcher, see recsys.utils.ddp).
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def process_rank() -> int:
    """The global rank of this process as set by its launcher (0 when not distributed)."""
    from pytorch_lightning.utilities import rank_zero_only

    return rank_zero_only.rank


def rank_zero_only_value(value: Any) -> Any:
    """``${rank_zero_only:x}``: ``x`` in the process of rank 0, ``None`` in the others."""
    return value if process_rank() == 0 else None


def rank_suffix() -> str:
    """``${rank_suffix:}``: ``""`` in rank 0, ``"_rank<N>"`` in rank N."""
    rank = process_rank()
    return f"_rank{rank}" if rank else ""


def register_resolvers() -> None:
    """Register the resolvers once per process (idempotent)."""
    for name, resolver in (("rank_zero_only", rank_zero_only_value), ("rank_suffix", rank_suffix)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
