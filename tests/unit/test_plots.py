"""Curves from CSV logs and the embedding-separation numbers, against hand-computed / brute-force references."""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from recsys.embedding_separation import (
    final_embeddings,
    own_minus_other_cosine,
    project_2d,
    select_users,
    silhouette_samples,
    silhouette_score,
)
from recsys.errors import ConfigError, DataError
from recsys.info import DatasetInfo, UserItemCSR
from recsys.models.components.lightgcn import LightGCNEncoder
from recsys.models.graph_module import GraphRecommender
from recsys.utils import plots

PNG = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------- references
def cos(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def brute_silhouette_samples(x, labels) -> list[float]:
    """Rousseeuw's silhouette with d = 1 − cos, one sample and one pair at a time."""
    n = len(labels)
    values = []
    for i in range(n):
        own = [j for j in range(n) if labels[j] == labels[i] and j != i]
        if not own:
            values.append(0.0)
            continue
        a = sum(1 - cos(x[i], x[j]) for j in own) / len(own)
        b = math.inf
        for other in set(labels) - {labels[i]}:
            members = [j for j in range(n) if labels[j] == other]
            b = min(b, sum(1 - cos(x[i], x[j]) for j in members) / len(members))
        values.append((b - a) / max(a, b) if max(a, b) > 0 else 0.0)
    return values


def brute_silhouette(x, labels) -> float:
    values = brute_silhouette_samples(x, labels)
    return sum(values) / len(values)


def brute_own_minus_other(users, items, labels) -> float:
    total = 0.0
    for i, lab in enumerate(labels):
        own = cos(items[i], users[lab])
        others = [cos(items[i], users[v]) for v in range(len(users)) if v != lab]
        total += own - sum(others) / len(others)
    return total / len(labels)


def hand_embedding():
    """Three noisy clusters in 4-D (one of them a single item) and their users."""
    rng = np.random.default_rng(3)
    centres = np.array([[1.0, 0.2, 0.0, 0.0], [0.0, 1.0, 0.3, 0.0], [0.1, 0.0, 0.0, 1.0]])
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 1, 0])
    items = centres[labels] + 0.45 * rng.standard_normal((labels.size, 4))
    users = centres + 0.1 * rng.standard_normal(centres.shape)
    return users, items, labels


# ------------------------------------------------------------------------------------------------- silhouette
def test_silhouette_equals_the_brute_force_double_loop():
    _, items, labels = hand_embedding()
    assert silhouette_score(items, labels) == pytest.approx(brute_silhouette(items, list(labels)), abs=1e-12)


def test_silhouette_of_perfectly_separated_and_of_mixed_clusters_by_hand():
    # identical vectors within a cluster, orthogonal clusters: a = 0, b = 1 → s = 1 everywhere
    x = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
    assert silhouette_score(x, [0, 0, 1, 1]) == pytest.approx(1.0)
    # the same points labelled across the clusters: a = 1 (the other is orthogonal), b = mean(0, 1) = 0.5
    # → s = (0.5 − 1) / 1 = −0.5 for every point
    np.testing.assert_allclose(silhouette_samples(x, [0, 1, 0, 1]), [-0.5] * 4)


def test_silhouette_single_member_cluster_counts_zero_and_labels_may_be_any_values():
    x = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    s = silhouette_samples(x, np.array([7, 7, 42]))
    assert s[2] == 0.0
    np.testing.assert_allclose(s, brute_silhouette_samples(x, [7, 7, 42]), atol=1e-12)
    with pytest.raises(ValueError):
        silhouette_score(x, [1, 1, 1])


def test_silhouette_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    _, items, labels = hand_embedding()
    expected = metrics.silhouette_score(items, labels, metric="cosine")
    assert silhouette_score(items, labels) == pytest.approx(expected, abs=1e-10)


def test_own_minus_other_cosine_equals_brute_force_and_a_hand_case():
    users, items, labels = hand_embedding()
    assert own_minus_other_cosine(users, items, labels) == pytest.approx(
        brute_own_minus_other(users, items, list(labels)), abs=1e-12)
    # two orthogonal users, each item on its own user's axis: 1 − 0 for both
    u = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert own_minus_other_cosine(u, np.array([[3.0, 0.0], [0.0, 0.5]]), np.array([0, 1])) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- user choice
def csr(sets: list[set[int]], num_items: int) -> UserItemCSR:
    u = torch.tensor([uu for uu, s in enumerate(sets) for _ in s], dtype=torch.long)
    i = torch.tensor([ii for s in sets for ii in sorted(s)], dtype=torch.long)
    return UserItemCSR.from_pairs(u, i, len(sets), num_items)


def test_select_users_takes_the_top_degree_users_and_drops_shared_items():
    sets = [{0, 1}, {2, 3, 4, 5}, {5, 6, 7}, {8, 9, 10}, set(), {11}]
    train = csr(sets, 12)
    users, items, labels = select_users(train.indptr.numpy(), train.indices.numpy(), 3)
    # degrees 2, 4, 3, 3, 0, 1 → user 1, then the tie 2/3 → lower id first
    assert users.tolist() == [1, 2, 3]
    chosen = [sets[u] for u in users]
    expected = sorted((i, k) for k, s in enumerate(chosen) for i in s if sum(i in t for t in chosen) == 1)
    assert list(zip(items.tolist(), labels.tolist(), strict=True)) == expected  # item 5 (users 1 and 2) dropped
    with pytest.raises(ConfigError, match="--users"):
        select_users(train.indptr.numpy(), train.indices.numpy(), 6)


# --------------------------------------------------------------------------------------------- embeddings
def test_final_embeddings_are_the_propagated_lightgcn_embeddings_in_eval_mode():
    pairs = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 3)]
    m, n, k = 3, 4, 2
    train = UserItemCSR.from_pairs(torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs]), m, n)
    torch.manual_seed(0)
    model = GraphRecommender(DatasetInfo(num_users=m, num_items=n, train=train), encoder=LightGCNEncoder,
                             optimizer=functools.partial(torch.optim.Adam), embedding_dim=3, num_layers=k,
                             edge_dropout=0.5)
    model.train()
    a = np.zeros((m + n, m + n))
    for u, i in pairs:
        a[u, m + i] = a[m + i, u] = 1.0
    d = np.where(a.sum(1) > 0, a.sum(1) ** -0.5, 0.0)
    norm = d[:, None] * a * d[None, :]
    e0 = model.encoder.ego().detach().double().numpy()  # the node table: users, then items
    layers, e = [e0], e0
    for _ in range(k):
        e = norm @ e
        layers.append(e)
    expected = np.mean(layers, axis=0)
    users, items = final_embeddings(model)
    np.testing.assert_allclose(users.numpy(), expected[:m], atol=1e-5)  # no edge dropout despite train mode
    np.testing.assert_allclose(items.numpy(), expected[m:], atol=1e-5)
    assert model.training  # mode restored


def test_pca_projection_keeps_distances_of_normalised_rows_in_a_plane():
    rng = np.random.default_rng(0)
    angles = rng.uniform(0, 2 * np.pi, 20)
    basis = np.linalg.qr(rng.standard_normal((5, 2)))[0]  # an orthonormal plane in 5-D
    x = (np.stack([np.cos(angles), np.sin(angles)], 1) * rng.uniform(0.5, 3, (20, 1))) @ basis.T
    xy, method = project_2d(x, "pca")
    assert method == "pca" and xy.shape == (20, 2)
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(dist(xy), dist(z), atol=1e-9)
    with pytest.raises(ConfigError, match="method"):
        project_2d(x, "umap")


@pytest.mark.slow  # importing scikit-learn's t-SNE takes seconds
def test_tsne_projection_when_scikit_learn_is_installed():
    pytest.importorskip("sklearn")
    _, items, _ = hand_embedding()
    xy, method = project_2d(items, "tsne", seed=1)
    assert method == "tsne" and xy.shape == (len(items), 2) and np.isfinite(xy).all()


# --------------------------------------------------------------------------------------------------- curves
CSV_TEXT = """epoch,step,train/loss,val/recall@20,test/recall@20
0,2,0.70,,
1,5,,0.10,
1,5,0.60,,
2,8,,0.30,
2,8,0.50,,
3,9,,,0.25
"""


def write_run(run: Path, text: str = CSV_TEXT, overrides=(), metric: str | None = None) -> Path:
    (run / "csv").mkdir(parents=True)
    (run / "csv" / "metrics.csv").write_text(text)
    (run / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(list(overrides)), run / ".hydra" / "overrides.yaml")
    if metric:
        OmegaConf.save(OmegaConf.create({"monitor": {"metric": metric}, "x": "${oc.env:NOPE}"}), run / ".hydra" / "config.yaml")
    return run


def test_epoch_table_merges_the_train_and_validation_rows_of_an_epoch(tmp_path):
    table = plots.epoch_table(write_run(tmp_path / "r") / "csv" / "metrics.csv")
    assert table["train/loss"].dropna().to_dict() == {0: 0.70, 1: 0.60, 2: 0.50}
    assert table["val/recall@20"].dropna().to_dict() == {1: 0.10, 2: 0.30}
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="epoch"):
        plots.epoch_table(tmp_path / "bad.csv")


def test_run_curves_png_and_metric_from_the_run_config(tmp_path):
    run = write_run(tmp_path / "r", metric="val/ndcg@20")
    assert plots.run_metric(run) == "val/ndcg@20"
    assert plots.run_metric(tmp_path) == plots.DEFAULT_METRIC
    path = plots.plot_folder(run)
    assert path == run / "plots" / "curves.png"
    assert path.read_bytes().startswith(PNG) and path.stat().st_size > 1000
    assert [p.name for p in path.parent.iterdir()] == ["curves.png"]  # no temporary file left


def test_sweep_folder_gives_one_figure_with_a_line_per_job(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    for num in (10, 2, 0):
        write_run(sweep / str(num), overrides=["model=lightgcn", f"model.num_layers={num}", f"paths.data_dir=/d{num}"])
    (sweep / ".hydra").mkdir()
    assert [p.name for p in plots.sweep_jobs(sweep)] == ["0", "2", "10"]
    assert plots.job_labels(sweep, plots.sweep_jobs(sweep)) == [
        "0: model.num_layers=0", "2: model.num_layers=2", "10: model.num_layers=10"]
    drawn: dict = {}
    real = plots.plot_curves
    monkeypatch.setattr(plots, "plot_curves", lambda tables, out, **kw: drawn.update(tables) or real(tables, out, **kw))
    path = plots.plot_folder(sweep)
    assert path == sweep / "plots" / "curves.png" and path.read_bytes().startswith(PNG)
    assert len(drawn) == 3
    with pytest.raises(DataError, match="sweep folder"):
        plots.plot_folder(tmp_path / "sweep" / "0" / "csv")
    with pytest.raises(DataError, match="no such folder"):
        plots.plot_folder(tmp_path / "missing")


def test_curves_at_end_without_a_csv_logger_warns_and_writes_nothing(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert plots.curves_at_end(tmp_path, [], "val/recall@20") is None
    assert "No CSV logger" in caplog.text and not (tmp_path / "plots").exists()


def test_curves_at_end_is_rank_zero_only_and_never_raises(tmp_path, caplog):
    from pytorch_lightning.loggers import CSVLogger

    lg = CSVLogger(tmp_path, name="csv", version="")
    assert plots.curves_at_end(tmp_path, [lg], "val/recall@20", is_global_zero=False) is None
    with caplog.at_level(logging.WARNING):  # CSV logger on, but nothing was logged: a warning, no exception
        assert plots.curves_at_end(tmp_path, [lg], "val/recall@20") is None
    assert "curves.png" in caplog.text
    lg.log_metrics({"epoch": 0, "train/loss": 0.7}, step=0)
    path = plots.curves_at_end(tmp_path, [lg], "val/recall@20")  # buffered rows are flushed first
    assert path == tmp_path / "plots" / "curves.png" and path.read_bytes().startswith(PNG)


def test_curves_go_to_wandb_as_images(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from pytorch_lightning.loggers import WandbLogger

    from recsys.utils.dashboards import log_images

    logged: list[dict] = []

    class FakeRun:
        def log(self, data):
            logged.append(data)

    class FakeWandbLogger(WandbLogger):
        @property
        def experiment(self):
            return FakeRun()

    png = plots.plot_curves({"r": plots.epoch_table(write_run(tmp_path / "r") / "csv" / "metrics.csv")},
                            tmp_path / "c.png")
    log_images([FakeWandbLogger(save_dir=str(tmp_path), offline=True)], {"plots/curves": png})
    assert len(logged) == 1 and isinstance(logged[0]["plots/curves"], wandb.Image)
