"""Collect a multirun folder into a results table and plots.

    python scripts/collect_results.py logs/train/multiruns/2026-01-01_12-00-00
    python scripts/collect_results.py <sweep> --metric val/recall@20 --out results/depth_sweep
    python scripts/collect_results.py <sweep> --wandb          # also upload table + plots (offline without a key)

Writes results.csv, results.md (one row per job: overrides, best validation metrics, test metrics, epochs,
time) and plot_*.png (metric vs depth per model, depth x dim heatmap per model and sampler, best value per
sampler) into the sweep folder (or --out). See recsys.utils.results.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from recsys.utils.results import add_upload_arguments, collect, upload_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder (hydra.sweep.dir)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the sweep folder)")
    parser.add_argument("--metric", default="test/recall@20", help="metric of the plots (default: test/recall@20)")
    parser.add_argument("--depth-key", default="model.num_layers", help="config key of the depth axis")
    parser.add_argument("--dim-key", default="model.embedding_dim", help="config key of the embedding-size axis")
    add_upload_arguments(parser, "the results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir}: no such folder", file=sys.stderr)
        return 2
    result = collect(args.sweep_dir, args.out, metric=args.metric, depth_key=args.depth_key, dim_key=args.dim_key)
    if result.num_jobs == 0:
        print(f"error: no job folder (with .hydra/overrides.yaml or metrics.json) under {args.sweep_dir}", file=sys.stderr)
        return 2
    print(f"{result.num_jobs} jobs ({result.num_failed} failed)")
    for path in [result.table_csv, result.table_md, *result.plots]:
        print(f"wrote {path}")

    settings = upload_settings(args.sweep_dir, args.upload, args.project, args.group)
    if settings is not None:
        # late: recsys.utils.dashboards imports Lightning; collecting a sweep stays light without it
        from recsys.utils.dashboards import upload_results

        run_dir = upload_results(result.table_csv, result.plots, save_dir=result.table_csv.parent, **settings)
        print(f"wandb run (group {settings['group']}): {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
