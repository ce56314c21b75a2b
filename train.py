"""Train a recommender. Examples:

    python train.py                                   # LightGCN on the embedded default data
    python train.py model=ngcf trainer.gpus=2
    python train.py -m model=lightgcn,ngcf model.num_layers=1,2,3,4
    python train.py ckpt_path=last                    # continue the latest interrupted run in its folder
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("RECSYS_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from recsys.train import main as train_main  # noqa: E402
from recsys.utils.resume import resume_argv_or_exit  # noqa: E402
from recsys.validation import preflight  # noqa: E402


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train_main(cfg)


if __name__ == "__main__":
    sys.argv = resume_argv_or_exit(sys.argv, Path(__file__).resolve().parent / "configs")  # ckpt_path=last / run
    preflight(sys.argv[1:], Path(__file__).resolve().parent / "configs")  # unknown group choices
    main()
