"""Export a run's final embeddings (+ optional FAISS index):
``python scripts/export_embeddings.py ckpt_path=<ckpt or run folder> output=<dir> [index=faiss]``
(format: :mod:`recsys.export`)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RECSYS_ROOT", str(ROOT))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from recsys.api import load_run  # noqa: E402
from recsys.errors import ConfigError  # noqa: E402
from recsys.export import export_embeddings, import_faiss  # noqa: E402
from recsys.utils.run import run_task  # noqa: E402


def export(cfg: DictConfig) -> dict:
    index = cfg.get("index")
    if index is not None and index not in ("faiss", "none"):
        raise ConfigError(f"index={index!r}: expected faiss or null")
    if index == "faiss":
        import_faiss()  # fail before loading anything
    run = load_run(cfg.ckpt_path, data=cfg.get("data"), device=cfg.get("device", "cpu"))
    meta = export_embeddings(run, cfg.output, index=index, ids_format=cfg.get("ids_format", "csv"))
    print(f"wrote {meta['model']} embeddings (dim {meta['dim']}, {meta['num_items']} items) to {cfg.output}")
    return meta


@hydra.main(version_base="1.3", config_path=str(ROOT / "configs"), config_name="export")
def main(cfg: DictConfig) -> None:
    run_task(export, cfg)


if __name__ == "__main__":
    main()
