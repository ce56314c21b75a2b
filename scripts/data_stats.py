"""Print the statistics of a dataset as the training run would see it (after preprocessing and splitting).

    python scripts/data_stats.py data=gowalla data.path=../shared/datasets/gowalla
    python scripts/data_stats.py data=ml_100k data.source.split=temporal

Users, items, interactions, density, split sizes, and percentiles of the user and item degrees (over all
interactions). The dataset is built (or read from the cache) exactly as ``train.py`` would.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RECSYS_ROOT", str(ROOT))

import hydra  # noqa: E402
import numpy as np  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from recsys.errors import RecsysError  # noqa: E402

PERCENTILES = (0, 10, 25, 50, 75, 90, 99, 100)


def dataset_stats(splits) -> dict[str, object]:
    """Counts, density and degree percentiles of a :class:`~recsys.data.interactions.GraphSplits`."""
    users = np.concatenate([splits.train[0], splits.valid[0], splits.test[0]])
    items = np.concatenate([splits.train[1], splits.valid[1], splits.test[1]])
    n = len(users)
    user_deg = np.bincount(users, minlength=splits.num_users)
    item_deg = np.bincount(items, minlength=splits.num_items)
    return {
        "users": splits.num_users,
        "items": splits.num_items,
        "interactions": n,
        "density": n / max(splits.num_users * splits.num_items, 1),
        "train": len(splits.train[0]),
        "valid": len(splits.valid[0]),
        "test": len(splits.test[0]),
        "users_with_test": int(len(np.unique(splits.test[0]))),
        "user_degree": {p: float(v) for p, v in zip(PERCENTILES, np.percentile(user_deg, PERCENTILES), strict=True)},
        "item_degree": {p: float(v) for p, v in zip(PERCENTILES, np.percentile(item_deg, PERCENTILES), strict=True)},
    }


def format_stats(name: str, stats: dict[str, object], meta: dict[str, str]) -> str:
    lines = [f"dataset: {name}"]
    for key in ("users", "items", "interactions"):
        lines.append(f"  {key:<14}{stats[key]:>14,}")
    lines.append(f"  {'density':<14}{stats['density']:>14.6f}")
    lines.append("  split sizes:")
    for key in ("train", "valid", "test"):
        share = stats[key] / max(stats["interactions"], 1)
        lines.append(f"    {key:<12}{stats[key]:>14,}  ({share:.1%})")
    lines.append(f"    {'users w/ test':<12}{stats['users_with_test']:>14,}")
    header = "".join(f"{'p' + str(p):>8}" for p in PERCENTILES)
    lines.append(f"  degree percentiles{header}")
    for key in ("user_degree", "item_degree"):
        row = "".join(f"{v:>8g}" for v in stats[key].values())
        lines.append(f"    {key.replace('_degree', ''):<16}{row}")
    for k in ("split", "validation", "unseen_eval_interactions"):
        if k in meta:
            lines.append(f"  {k}: {meta[k]}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        datamodule = instantiate(cfg.data, negative_sampler=None)
        datamodule.prepare_data()
        datamodule.setup("fit")
    except RecsysError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as err:  # hydra wraps constructor errors
        if isinstance(err.__cause__, RecsysError):
            print(f"error: {err.__cause__}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    splits = datamodule.splits
    print(format_stats(datamodule.source.name, dataset_stats(splits), splits.meta))


if __name__ == "__main__":
    if not any(a.startswith("task_name=") for a in sys.argv[1:]):
        sys.argv.append("task_name=data_stats")  # run folder logs/data_stats/..., not logs/train/...
    main()
