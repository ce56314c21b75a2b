"""The plot scripts on real (tiny) training runs: plots/curves.png from train.py, scripts/plot_run.py on a run and
on a sweep, scripts/plot_embeddings.py (PNG + separation table; its numbers recomputed from the checkpoint)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.integration.conftest import TINY_DATA, TRAIN_QUIET, check, read_metrics, run_script

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes().startswith(PNG)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two tiny trained runs: MF and LightGCN with 2 layers."""
    root = tmp_path_factory.mktemp("plot_runs")
    out = {}
    for name, model in (("mf", ["model=mf"]), ("lgcn2", ["model=lightgcn", "model.num_layers=2"])):
        check(run_script("train.py", *model, f"hydra.run.dir={root / name}", f"paths.data_dir={root / 'data'}",
                         *TINY_DATA, *TRAIN_QUIET, "trainer.max_epochs=3", "model.embedding_dim=16"))
        out[name] = root / name
    return out


def brute_cos(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.slow
def test_training_writes_curves_and_plot_run_redraws_them(runs, tmp_path):
    run = runs["mf"]
    assert is_png(run / "plots" / "curves.png")  # written by train.py itself
    out = tmp_path / "c.png"
    proc = check(run_script("scripts/plot_run.py", str(run), "--out", str(out), "--metric", "val/ndcg@20"))
    assert is_png(out) and str(out) in proc.stdout
    proc = run_script("scripts/plot_run.py", str(tmp_path / "nothing"))
    assert proc.returncode == 2 and proc.stderr.startswith("error:")


@pytest.mark.slow
def test_plot_embeddings_png_and_separation_recomputed_from_the_mf_checkpoint(runs, tmp_path):
    out = tmp_path / "sep"
    proc = check(run_script("scripts/plot_embeddings.py", str(runs["mf"]), str(runs["lgcn2"]), "--users", "4",
                            "--method", "pca", "--out", str(out)))
    assert is_png(out / "embeddings.png")
    with open(out / "separation.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["layers"]) for r in rows] == [("mf", "0"), ("lightgcn", "2")]
    assert json.loads((out / "separation.json").read_text())["runs"][0]["run"] == "mf"
    assert "silhouette=" in proc.stdout

    # MF: the final embeddings are the embedding tables of the best checkpoint; the users are the 4 with most
    # train items (the cached split), items of several of them left out
    payload = torch.load(read_metrics(runs["mf"])["best_checkpoint"], map_location="cpu", weights_only=True)
    nodes = payload["state_dict"]["encoder.embedding.weight"].double().numpy()  # users first, then items
    (cache,) = (runs["mf"].parent / "data").rglob("*.npz")
    with np.load(cache) as z:
        tu, ti = z["train_users"], z["train_items"]
        users_w, items_w = nodes[: int(z["num_users"])], nodes[int(z["num_users"]):]
    sets = {u: set(ti[tu == u].tolist()) for u in np.unique(tu).tolist()}
    chosen = sorted(sets, key=lambda u: (-len(sets[u]), u))[:4]
    pairs = [(i, k) for k, u in enumerate(chosen) for i in sets[u] if sum(i in sets[v] for v in chosen) == 1]
    assert int(rows[0]["items"]) == len(pairs)
    sil = []
    for i, k in pairs:
        own = [brute_cos(items_w[i], items_w[j]) for j, kk in pairs if kk == k and j != i]
        a = sum(1 - c for c in own) / len(own)
        b = min(sum(1 - brute_cos(items_w[i], items_w[j]) for j, kk in pairs if kk == o)
                / sum(kk == o for _, kk in pairs) for o in {kk for _, kk in pairs} - {k})
        sil.append((b - a) / max(a, b))
    assert float(rows[0]["silhouette"]) == pytest.approx(sum(sil) / len(sil), abs=1e-9)
    delta = [brute_cos(items_w[i], users_w[chosen[k]])
             - sum(brute_cos(items_w[i], users_w[chosen[v]]) for v in range(4) if v != k) / 3 for i, k in pairs]
    assert float(rows[0]["own_minus_other_cos"]) == pytest.approx(sum(delta) / len(delta), abs=1e-9)
    assert not math.isnan(float(rows[1]["silhouette"]))


@pytest.mark.slow
def test_plot_embeddings_with_tsne_and_bad_input(runs, tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "tsne"
    check(run_script("scripts/plot_embeddings.py", str(runs["lgcn2"]), "--users", "3", "--out", str(out)))
    assert is_png(out / "embeddings.png")
    assert json.loads((out / "separation.json").read_text())["method"] == "tsne"
    proc = run_script("scripts/plot_embeddings.py", str(tmp_path / "missing"), "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_sweep_curves_and_a_run_with_another_logger(tmp_path):
    sweep = tmp_path / "sweep"
    check(run_script("train.py", "-m", "model.num_layers=0,1", f"hydra.sweep.dir={sweep}",
                     f"paths.data_dir={tmp_path / 'data'}", *TINY_DATA, *TRAIN_QUIET, "trainer.max_epochs=2",
                     "model.embedding_dim=8", "~hydra.callbacks.collect_results"))
    proc = check(run_script("scripts/plot_run.py", str(sweep)))
    assert is_png(sweep / "plots" / "curves.png") and str(sweep / "plots" / "curves.png") in proc.stdout
    assert is_png(sweep / "0" / "plots" / "curves.png") and is_png(sweep / "1" / "plots" / "curves.png")

    # another logger alone: the CSV log is kept beside it, so the run still gets its curves
    run = tmp_path / "nocsv"
    check(run_script("train.py", "logger=tensorboard", f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}",
                     *TINY_DATA, *TRAIN_QUIET, "trainer.max_epochs=1", "model.embedding_dim=8"))
    assert (run / "metrics.json").is_file() and is_png(run / "plots" / "curves.png")
    assert (run / "csv" / "metrics.csv").is_file() and list((run / "tensorboard").rglob("events.*"))
