"""Users and their items in 2-D, one panel per run (NGCF Fig. 4), and how well they separate.

    python scripts/plot_embeddings.py logs/sep/mf logs/sep/lightgcn_1 logs/sep/lightgcn_3 --out docs/figures/sep
    python scripts/plot_embeddings.py <runs...> --users 6 --method pca --wandb

For each run folder (a graph model: mf, lightgcn, ngcf): the weights of its best checkpoint, the final
(propagated) user and item embeddings, the --users users with the most train items and their train items
(items shared by several chosen users are left out). Prints per run the silhouette score of those items
labelled by their user (cosine distance) and the mean cosine of an item to its own user minus to the other
chosen users. Writes into --out: embeddings.png, separation.csv, separation.json.
t-SNE needs scikit-learn (pip install -e '.[plots]'); without it PCA is used. See recsys.embedding_separation.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from pathlib import Path

import numpy as np

from recsys.embedding_separation import load_graph_run, measure, project_2d
from recsys.errors import RecsysError
from recsys.io import atomic_write_text
from recsys.utils.dashboards import upload_results
from recsys.utils.plots import plot_embedding_panels

COLUMNS = ["run", "model", "layers", "data", "users", "items", "silhouette", "own_minus_other_cos", "checkpoint"]


def plot_subset(labels: np.ndarray, max_items: int, seed: int) -> np.ndarray:
    """Indices of at most ``max_items`` items per user (a seeded choice), for drawing only."""
    rng = np.random.default_rng(seed)
    keys = rng.random(labels.size)
    order = np.lexsort((keys, labels))  # by user, random within
    rank = np.arange(labels.size) - np.searchsorted(labels[order], labels[order])
    return np.sort(order[rank < max_items])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="training run folders")
    parser.add_argument("--out", type=Path, default=Path("logs/plot_embeddings"), help="output folder")
    parser.add_argument("--users", type=int, default=6, help="number of users (the top-degree ones; default 6)")
    parser.add_argument("--method", choices=["tsne", "pca"], default="tsne", help="2-D projection (default tsne)")
    parser.add_argument("--max-items", type=int, default=150, help="items drawn per user (all are measured)")
    parser.add_argument("--seed", type=int, default=0, help="seed of t-SNE and of the drawn items")
    parser.add_argument("--wandb", action="store_true", help="upload the table and figure to wandb")
    parser.add_argument("--project", default="recsys", help="wandb project (with --wandb)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    rows, panels, method_used = [], [], args.method
    try:
        for run_dir in args.runs:
            sep = measure(load_graph_run(run_dir), args.users)
            rows.append(sep.row())
            keep = plot_subset(sep.labels, args.max_items, args.seed)
            xy, method_used = project_2d(np.concatenate([sep.user_emb, sep.item_emb[keep]]), args.method, args.seed)
            n = len(sep.users)
            info = sep.info
            depth = "" if info["model"] == "mf" else f" L={info['layers']}"
            panels.append({
                "title": f"{info['model']}{depth} ({sep.name})\nsilhouette {sep.silhouette:.3f}, "
                         f"Δcos {sep.own_minus_other:.3f}",
                "user_xy": xy[:n], "item_xy": xy[n:], "labels": sep.labels[keep],
            })
            print(f"{sep.name}: model={info['model']} layers={info['layers']} data={info['data']} "
                  f"users={n} items={len(sep.items)} silhouette={sep.silhouette:.4f} "
                  f"own_minus_other_cos={sep.own_minus_other:.4f}", flush=True)
    except RecsysError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    out = args.out
    figure = plot_embedding_panels(panels, out / "embeddings.png")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "separation.csv", buf.getvalue())
    meta = {"users": args.users, "method": method_used, "seed": args.seed, "distance": "cosine", "runs": rows}
    atomic_write_text(out / "separation.json", json.dumps(meta, indent=2) + "\n")
    for path in (figure, out / "separation.csv", out / "separation.json"):
        print(f"wrote {path}")
    if args.wandb:
        run_dir = upload_results(out / "separation.csv", [figure], project=args.project, group="embeddings",
                                 save_dir=out)
        print(f"wandb run (group embeddings): {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
