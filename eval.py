"""Evaluate a checkpoint on the test split: ``python eval.py ckpt_path=logs/train/runs/<run>/checkpoints/best.ckpt``."""

import os
import sys
from pathlib import Path

os.environ.setdefault("RECSYS_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from recsys.evaluate import main as eval_main  # noqa: E402
from recsys.validation import preflight  # noqa: E402


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    eval_main(cfg)


if __name__ == "__main__":
    preflight(sys.argv[1:], Path(__file__).resolve().parent / "configs")  # unknown group choices
    main()
