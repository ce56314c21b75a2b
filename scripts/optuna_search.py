"""Hyper-parameter search with Optuna over the same training as train.py (needs `pip install -e ".[search]"`).

    python scripts/optuna_search.py hparams_search=lightgcn_optuna
    python scripts/optuna_search.py hparams_search=lightgcn_optuna optuna.n_trials=50 \
        optuna.storage=sqlite:///logs/optuna.db           # resumable: rerun to add trials to the same study
    python scripts/optuna_search.py hparams_search=ngcf_optuna data=gowalla trainer.gpus=1

Any train.py override works here and applies to every trial. Trials run one after another in
logs/optuna/runs/<time>/<trial>/ (each with .hydra/ and metrics.json); at the end optuna_best.json,
optuna_trials.csv and the results table/plots of scripts/collect_results.py are written there.
See recsys.utils.search for the search-space syntax.
"""

import os
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RECSYS_ROOT", str(ROOT))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from recsys.train import train  # noqa: E402
from recsys.utils.run import run_task  # noqa: E402
from recsys.utils.search import run_study  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(ROOT / "configs"), config_name="train")
def main(cfg: DictConfig) -> None:
    run_task(partial(run_study, train=train), cfg)


if __name__ == "__main__":
    main()
