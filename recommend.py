"""Top-k recommendations of a trained run: ``python recommend.py ckpt_path=<run folder> users=[u1,u2] k=10``."""

import os
import sys
from pathlib import Path

os.environ.setdefault("RECSYS_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from recsys.recommend import main as recommend_main  # noqa: E402
from recsys.validation import preflight  # noqa: E402


@hydra.main(version_base="1.3", config_path="configs", config_name="recommend")
def main(cfg: DictConfig) -> None:
    recommend_main(cfg)


if __name__ == "__main__":
    preflight(sys.argv[1:], Path(__file__).resolve().parent / "configs")  # unknown group choices
    main()
