"""Do users and their items separate in the embedding space as propagation layers are added? (NGCF §4.4.2,
Fig. 4: t-SNE of 6 Gowalla users and their items; the claim there is that items of one user cluster more
tightly with more layers.) Here it is a measurement as well as a picture (``scripts/plot_embeddings.py``):

* :func:`load_graph_run`: a run folder's config, DataModule and graph model with the best checkpoint's weights
  (:func:`recsys.runs.load_run`);
* :func:`final_embeddings`: the propagated user/item embeddings (the encoder on the normalised train graph, eval
  mode: no dropout), as the model scores with them;
* :func:`select_users`: the ``n`` users with the most train items (ties → lower id), and their train items; an
  item in the train set of several chosen users is left out (its label would be ambiguous);
* :func:`silhouette_score`: mean silhouette ``s(i) = (b(i) − a(i)) / max(a(i), b(i))`` of the items labelled by
  their user, with the cosine distance ``1 − cos``; ``a`` = mean distance to the other items of its user, ``b`` =
  smallest mean distance to the items of another user; ``s = 0`` for a user with a single item (scikit-learn's
  convention). Vectorised: one ``(n, n)`` distance matrix times a one-hot label matrix;
* :func:`own_minus_other_cosine`: ``mean_i cos(e_i, e_{u(i)}) − mean_i mean_{v ≠ u(i)} cos(e_i, e_v)`` over the
  chosen users ``v`` (how much closer an item is to its own user than to the other chosen users);
* :func:`project_2d`: t-SNE (scikit-learn, optional) or PCA (SVD of the centred rows) of the L2-normalised rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from recsys.errors import ConfigError, DataError
from recsys.models.graph_module import GraphRecommender
from recsys.runs import load_run, model_name

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    """A trained run rebuilt from its folder."""

    run_dir: Path
    checkpoint: Path
    cfg: DictConfig
    datamodule: Any
    model: Any


def load_graph_run(run_dir: str | Path) -> LoadedRun:
    """Config, DataModule (set up) and graph model (weights of the best checkpoint, eval mode) of a training run
    folder, through :func:`recsys.runs.load_run`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run folder")
    run = load_run(run_dir)
    if not isinstance(run.model, GraphRecommender) or run.ckpt_path is None:
        target = run.cfg.model.get("_target_") if run.cfg is not None else type(run.model).__name__
        raise ConfigError(f"{run_dir}: model {target} has no trained user/item embeddings "
                          "(plot_embeddings needs a graph model: mf, lightgcn, ngcf)")
    run.model.eval()
    return LoadedRun(run_dir, Path(run.ckpt_path), run.cfg, run.datamodule, run.model)


@torch.no_grad()
def final_embeddings(model) -> tuple[torch.Tensor, torch.Tensor]:
    """The propagated ``(user_emb, item_emb)`` of a graph model (encoder forward on the normalised adjacency,
    eval mode), on the CPU."""
    was_training = model.training
    model.eval()
    try:
        users, items = model()
    finally:
        model.train(was_training)
    return users.detach().float().cpu(), items.detach().float().cpu()


def select_users(indptr: np.ndarray, indices: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n`` users with the most train items (ties → lower id) from a CSR train graph; returns
    ``(users (n,), items (m,), labels (m,))`` where ``labels[j]`` is the position in ``users`` of the one chosen
    user who has ``items[j]`` (items of several chosen users are dropped). Items in ascending id order."""
    indptr, indices = np.asarray(indptr), np.asarray(indices)
    degree = np.diff(indptr)
    if n < 2:
        raise ConfigError(f"--users={n}: need at least 2 users to compare")
    if n > int((degree > 0).sum()):
        raise ConfigError(f"--users={n}: only {int((degree > 0).sum())} users have train items")
    order = np.lexsort((np.arange(degree.size), -degree))  # degree descending, then id ascending
    users = order[:n]
    starts, ends = indptr[users], indptr[users + 1]
    lengths = ends - starts
    flat = np.repeat(starts - np.cumsum(np.r_[0, lengths[:-1]]), lengths) + np.arange(lengths.sum())
    items, owner = indices[flat], np.repeat(np.arange(n), lengths)
    uniq, inverse, counts = np.unique(items, return_inverse=True, return_counts=True)
    single = counts[inverse] == 1
    items, owner = items[single], owner[single]
    order_items = np.argsort(items, kind="stable")
    return users, items[order_items], owner[order_items]


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_distances(x: np.ndarray) -> np.ndarray:
    """``1 − cos(x_i, x_j)`` for all pairs, clipped to ``[0, 2]``, zero diagonal."""
    z = _normalise(x)
    d = np.clip(1.0 - z @ z.T, 0.0, 2.0)
    np.fill_diagonal(d, 0.0)
    return d


def silhouette_samples(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample silhouette with the cosine distance (see the module docstring), vectorised."""
    labels = np.asarray(labels)
    _, lab = np.unique(labels, return_inverse=True)
    k = int(lab.max()) + 1 if lab.size else 0
    if k < 2:
        raise ValueError(f"silhouette needs at least 2 labels, got {k}")
    d = cosine_distances(x)
    onehot = np.eye(k)[lab]  # (n, k)
    sums = d @ onehot  # (n, k): summed distance of each sample to each cluster
    sizes = onehot.sum(0)  # (k,)
    own_size = sizes[lab]
    rows = np.arange(lab.size)
    a = sums[rows, lab] / np.maximum(own_size - 1, 1)
    mean_other = sums / sizes
    mean_other[rows, lab] = np.inf
    b = mean_other.min(1)
    denom = np.maximum(a, b)
    s = np.where(denom > 0, (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
    return np.where(own_size > 1, s, 0.0)


def silhouette_score(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of ``x`` (rows) labelled by ``labels``, cosine distance."""
    return float(silhouette_samples(x, labels).mean())


def own_minus_other_cosine(user_emb: np.ndarray, item_emb: np.ndarray, labels: np.ndarray) -> float:
    """``mean_i [cos(e_i, u_{l(i)}) − mean_{v ≠ l(i)} cos(e_i, u_v)]`` for items ``item_emb`` labelled with rows
    ``labels`` of ``user_emb`` (the chosen users)."""
    labels = np.asarray(labels)
    n_users = user_emb.shape[0]
    if n_users < 2:
        raise ValueError("own_minus_other_cosine needs at least 2 users")
    cos = _normalise(item_emb) @ _normalise(user_emb).T  # (m, n_users)
    own = cos[np.arange(labels.size), labels]
    other = (cos.sum(1) - own) / (n_users - 1)
    return float((own - other).mean())


def project_2d(x: np.ndarray, method: str = "tsne", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of the L2-normalised rows of ``x`` and the method used (``tsne`` falls back to ``pca``
    without scikit-learn)."""
    z = _normalise(x)
    if method not in ("tsne", "pca"):
        raise ConfigError(f"--method={method!r}: expected tsne or pca")
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            log.warning("scikit-learn is not installed (pip install -e '.[plots]'): PCA instead of t-SNE")
            method = "pca"
        else:
            perplexity = float(min(30.0, max(2.0, (z.shape[0] - 1) / 3)))
            return TSNE(n_components=2, metric="cosine", init="pca", perplexity=perplexity,
                        random_state=seed).fit_transform(z), "tsne"
    centred = z - z.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    signs = np.sign(coords[np.abs(coords).argmax(0), np.arange(2)])  # deterministic orientation
    return coords * np.where(signs == 0, 1, signs), "pca"


@dataclass
class Separation:
    """One run's chosen users and items, their embeddings and separation numbers."""

    name: str
    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    user_emb: np.ndarray
    item_emb: np.ndarray
    silhouette: float
    own_minus_other: float
    info: dict[str, Any]

    def row(self) -> dict[str, Any]:
        return {"run": self.name, **self.info, "users": len(self.users), "items": len(self.items),
                "silhouette": self.silhouette, "own_minus_other_cos": self.own_minus_other}


def run_info(run: LoadedRun) -> dict[str, Any]:
    """Model name, depth, dataset and checkpoint of a loaded run (table columns)."""
    model_cfg = run.cfg.model
    layers = OmegaConf.select(model_cfg, "num_layers", default=None)
    layer_sizes = OmegaConf.select(model_cfg, "layer_sizes", default=None)
    if layer_sizes:
        layers = len(layer_sizes)
    name = model_name(model_cfg)
    data = None
    hydra_file = run.run_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():  # the data config chosen on the command line (gowalla, synthetic_graph, …)
        try:
            data = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.choices.data", default=None)
        except Exception:
            data = None
    if not data:
        data = str(OmegaConf.select(run.cfg, "data.source._target_", default="") or "").rsplit(".", 1)[-1]
    return {"model": name, "layers": layers, "data": data, "checkpoint": str(run.checkpoint)}


def measure(run: LoadedRun, n_users: int) -> Separation:
    """Separation of the ``n_users`` top-degree users' train items in a loaded run's final embeddings."""
    train = run.datamodule.info.train
    users, items, labels = select_users(train.indptr.cpu().numpy(), train.indices.cpu().numpy(), n_users)
    user_emb, item_emb = (t.numpy() for t in final_embeddings(run.model))
    u, i = user_emb[users], item_emb[items]
    return Separation(run.run_dir.name, users, items, labels, u, i, silhouette_score(i, labels),
                      own_minus_other_cosine(u, i, labels), run_info(run))
