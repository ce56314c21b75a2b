"""A trained run, owned by one module: find its checkpoint (:func:`resolve_checkpoint`), read it, rebuild its
config (:func:`merge_data_overrides`), data and model (:mod:`recsys.builders`), check that the data is the one it
was trained on, and answer top-k queries in the dataset's original ids (:class:`Run`, :class:`IdMap`).

``run = load_run("logs/train/runs/<run>")``: ``run.cfg`` (the training config, with any ``data`` overrides),
``run.datamodule`` (set up, the cache the run used), ``run.model`` (weights loaded, eval mode);
``run.recommend(users, k)`` and ``run.recommend_session(items, k)`` return the rows ``recommend.py`` writes
(:func:`rows_frame`), as a pandas DataFrame. Users rank with the model's
:meth:`~recsys.models.ranking_module.TopKRecommender.topk_users` (train ∪ validation items excluded by default),
sessions with :meth:`~recsys.models.session_recommender.SessionRecommender.topk_after_prefixes`; both rank with
:func:`recsys.metrics.topk_excluding`, as evaluation does. The public import is :mod:`recsys.api`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from recsys.builders import build_datamodule, build_model
from recsys.data.cache import splits_identity
from recsys.errors import ConfigError, DataError, RecsysError
from recsys.info import UserItemCSR
from recsys.models.session_recommender import pad_prefixes

log = logging.getLogger(__name__)


# -- ids and rows ----------------------------------------------------------------------------------
class IdMap:
    """Original ids (strings) ↔ internal dense ids, vectorised (a sorted copy + ``searchsorted``)."""

    def __init__(self, ids: np.ndarray | None, size: int, kind: str) -> None:
        self.ids = np.asarray(ids).astype(str) if ids is not None else np.arange(size).astype(str)
        if len(self.ids) != size:
            raise DataError(f"the cached dataset has {len(self.ids)} {kind} ids for {size} {kind}s; delete the cache")
        self.kind = kind
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]

    def __len__(self) -> int:
        return len(self.ids)

    def to_internal(self, original: Iterable[Any], what: str | None = None) -> np.ndarray:
        """Internal ids of ``original`` (compared as strings); unknown ids → :class:`DataError` listing ≤ 10."""
        query = np.asarray([str(x) for x in original], dtype=str)
        if query.size == 0:
            return np.zeros(0, dtype=np.int64)
        pos = np.searchsorted(self._sorted, query).clip(max=len(self._sorted) - 1)
        found = self._sorted[pos] == query
        if not found.all():
            unknown = list(dict.fromkeys(query[~found].tolist()))
            shown = ", ".join(repr(u) for u in unknown[:10]) + (f" … ({len(unknown)} in all)" if len(unknown) > 10 else "")
            raise DataError(f"{what or self.kind + 's'}: unknown {self.kind} id(s) {shown}; the dataset has "
                            f"{len(self)} {self.kind}s (e.g. {', '.join(repr(x) for x in self.ids[:3].tolist())})")
        return self._order[pos].astype(np.int64)

    def to_original(self, internal: np.ndarray) -> np.ndarray:
        """Original ids (strings) of internal ids."""
        return self.ids[np.asarray(internal)]


def rows_frame(key_name: str, keys: np.ndarray, items: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Long-format rows ``key, rank (1-based), item, score`` of ``(B, k)`` id/score arrays, dropping −∞ scores
    (excluded items that only filled a short list)."""
    b, k = items.shape
    frame = pd.DataFrame({
        key_name: np.repeat(keys, k), "rank": np.tile(np.arange(1, k + 1), b),
        "item": items.reshape(-1), "score": scores.reshape(-1).astype(np.float32),
    })
    return frame[np.isfinite(frame["score"].to_numpy())].reset_index(drop=True)


def iter_chunks(n: int, size: int) -> Iterator[slice]:
    """Slices ``[0, size), [size, 2·size), …`` covering ``range(n)``; ``size`` is a config's ``chunk_size``."""
    if size < 1:
        raise ConfigError(f"chunk_size={size}: expected a positive integer")
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


# -- finding and reading a run ---------------------------------------------------------------------

def resolve_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint of ``path``: the file itself; for a run folder its best checkpoint (``metrics.json``
    ``best_checkpoint``, else ``checkpoints/epoch_*.ckpt``, the latest), else ``checkpoints/last.ckpt``. ``None``
    for a run folder without checkpoint (a model with nothing to train, e.g. MostPop)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise ConfigError(f"ckpt_path={str(path)!r}: no such checkpoint file or run folder")
    metrics = p / "metrics.json"
    if metrics.is_file():
        try:
            best = json.loads(metrics.read_text()).get("best_checkpoint")
        except json.JSONDecodeError as err:
            raise DataError(f"{metrics}: not valid JSON ({err})") from err
        if best:
            for candidate in (Path(best), p / "checkpoints" / Path(best).name):  # the run folder may have moved
                if candidate.is_file():
                    return candidate
    epochs = sorted((p / "checkpoints").glob("epoch_*.ckpt"))
    if epochs:
        return epochs[-1]
    if (p / "checkpoints" / "last.ckpt").is_file():
        return p / "checkpoints" / "last.ckpt"
    if (p / ".hydra" / "config.yaml").is_file():
        return None
    raise ConfigError(f"ckpt_path={str(path)!r}: a folder without checkpoints/*.ckpt nor .hydra/config.yaml")


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise ConfigError(f"ckpt_path={str(path)!r}: not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or "recsys_config" not in payload:
        raise ConfigError(f"ckpt_path={str(path)!r} was not written by recsys (no 'recsys_config' entry)")
    return payload


def _folder_config(folder: Path) -> DictConfig:
    """The training config of a run folder without checkpoint (``.hydra/config.yaml``; ``data``/``model``/``sampler``
    resolve without Hydra)."""
    cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
    keys = [k for k in ("data", "model", "sampler") if cfg.get(k) is not None]
    out = OmegaConf.create({k: OmegaConf.to_container(cfg[k], resolve=True) for k in keys})
    out.seed = cfg.get("seed")
    return out


@dataclass
class Run:
    """A trained model with its data (see module docstring). Build with :func:`load_run`, or directly from a
    set-up DataModule and a model (``cfg`` may then be ``None``)."""

    cfg: DictConfig | None
    datamodule: pl.LightningDataModule
    model: pl.LightningModule
    ckpt_path: Path | None = None
    _exclude: UserItemCSR | None = field(default=None, repr=False)
    _prepared: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        splits = self.datamodule.splits
        if splits is None:
            raise RuntimeError("Run needs a set-up DataModule (datamodule.setup())")
        self.kind = getattr(self.datamodule, "kind", "graph")
        self.item_map = IdMap(splits.item_ids, splits.num_items, "item")
        self.user_map = IdMap(getattr(splits, "user_ids", None), splits.num_users, "user") if self.kind == "graph" else None
        self.model.eval()

    @property
    def num_users(self) -> int:
        return len(self.user_map) if self.user_map is not None else 0

    @property
    def num_items(self) -> int:
        return len(self.item_map)

    def seen(self) -> UserItemCSR:
        """Train ∪ validation items of every user (what ``exclude_seen`` removes)."""
        if self._exclude is None:
            self._exclude = self.datamodule.excluded_items()
        return self._exclude

    def _require(self, kind: str, call: str) -> None:
        if self.kind != kind:
            other = "recommend_session(items, k) / session=[...]" if kind == "graph" else "recommend(users, k) / users=[...]"
            raise ConfigError(f"{call} needs a {kind} model, but this run is a {self.kind} model; use {other}")

    # -- users -----------------------------------------------------------------------------------
    def recommend_internal(self, users: torch.Tensor, k: int, exclude_seen: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` internal item ids ``(B, k)`` and float32 scores of internal ``users`` ``(B,)``."""
        self._require("graph", "recommend")
        if not self._prepared:
            with torch.no_grad():
                self.model.prepare_scoring()
            self._prepared = True
        exclude = self.seen().gather_rows(users.cpu()) if exclude_seen else None
        with torch.no_grad():
            return self.model.topk_users(users.to(self.model.device), k, exclude)

    def _frames(self, internal: np.ndarray, k: int, exclude_seen: bool, chunk_size: int) -> Iterator[pd.DataFrame]:
        for part in iter_chunks(len(internal), chunk_size):
            users = torch.from_numpy(internal[part])
            items, scores = self.recommend_internal(users, k, exclude_seen)
            yield rows_frame("user", self.user_map.to_original(users.numpy()),
                             self.item_map.to_original(items.cpu().numpy()), scores.cpu().numpy())

    def recommend(self, users: Sequence[Any], k: int = 10, exclude_seen: bool = True, chunk_size: int = 1024) -> pd.DataFrame:
        """Rows ``user, rank, item, score`` (original ids, rank 1 = best) for the given original user ids."""
        self._require("graph", "recommend")
        internal = self.user_map.to_internal(users, "users")
        frames = list(self._frames(internal, k, exclude_seen, chunk_size))
        return pd.concat(frames, ignore_index=True) if frames else rows_frame("user", np.zeros(0, str), np.zeros((0, k), str), np.zeros((0, k)))

    def iter_recommend_all(self, k: int = 10, exclude_seen: bool = True, chunk_size: int = 1024) -> Iterator[pd.DataFrame]:
        """The rows of every user, one DataFrame per chunk of ``chunk_size`` users (bounded memory)."""
        self._require("graph", "recommend")
        return self._frames(np.arange(self.num_users), k, exclude_seen, chunk_size)

    # -- sessions --------------------------------------------------------------------------------
    def recommend_sessions(self, prefixes: Sequence[Sequence[Any]], k: int = 10, exclude_seen: bool = False,
                           chunk_size: int = 1024) -> pd.DataFrame:
        """Rows ``session, rank, item, score``: the next-item top-``k`` after each prefix of original item ids
        (``session`` = the prefix's 0-based position)."""
        self._require("session", "recommend_session")
        internal = []
        for j, prefix in enumerate(prefixes):
            if len(prefix) == 0:
                raise DataError(f"session {j}: an empty prefix; give at least one item id")
            internal.append(self.item_map.to_internal(prefix, f"session {j}" if len(prefixes) > 1 else "session"))
        frames = []
        for part in iter_chunks(len(internal), chunk_size):
            padded, lengths = pad_prefixes(internal[part])
            with torch.no_grad():
                items, scores = self.model.topk_after_prefixes(padded, lengths, k, exclude_seen)
            frames.append(rows_frame("session", np.arange(part.start, part.stop), self.item_map.to_original(items.cpu().numpy()),
                                     scores.cpu().numpy()))
        return pd.concat(frames, ignore_index=True)

    def recommend_session(self, items: Sequence[Any], k: int = 10, exclude_seen: bool = False) -> pd.DataFrame:
        """The next-item top-``k`` after one prefix of original item ids (rows ``session (0), rank, item, score``)."""
        return self.recommend_sessions([items], k, exclude_seen)


def model_name(model_cfg: DictConfig) -> str:
    """``mf``, ``lightgcn``, ``ngcf``, ``simgcl``, ``gru4rec``, … of a run's model config: the module's class, or
    for the generic graph module its encoder's (without ``Encoder``; MF = LightGCN without layers), lower case."""
    module = str(OmegaConf.select(model_cfg, "_target_", default="") or "").rsplit(".", 1)[-1]
    encoder = str(OmegaConf.select(model_cfg, "encoder._target_", default="") or "").rsplit(".", 1)[-1]
    name = (encoder if encoder and module in ("GraphRecommender", "") else module).removesuffix("Encoder").lower()
    return "mf" if name == "lightgcn" and OmegaConf.select(model_cfg, "num_layers", default=None) == 0 else name


def _check_dataset(payload: dict[str, Any], datamodule: pl.LightningDataModule, ckpt: Path) -> None:
    """The checkpoint's dataset is the loaded one: same sizes, and the same original ids where the checkpoint
    recorded them (``recsys_dataset``)."""
    hp = payload.get("hyper_parameters") or {}
    splits = datamodule.splits
    name = getattr(datamodule.source, "name", "?")
    hint = "a checkpoint of another dataset; drop the data.* overrides or point them at the run's dataset"
    for key, actual in (("num_users", getattr(splits, "num_users", None)), ("num_items", splits.num_items)):
        if key in hp and actual is not None and int(hp[key]) != int(actual):
            raise ConfigError(f"ckpt_path={str(ckpt)!r} was trained on a dataset with {key}={hp[key]}, but the data "
                              f"({name}) has {key}={actual}: {hint}")
    recorded = payload.get("recsys_dataset")
    if recorded is not None and recorded != splits_identity(splits):
        raise ConfigError(f"ckpt_path={str(ckpt)!r} was trained on a dataset with other user/item ids than the data "
                          f"({name}) of the same size: {hint}")


def merge_data_overrides(cfg: DictConfig, data: dict[str, Any] | DictConfig) -> None:
    """Merge ``data`` overrides into a run's stored (resolved) ``cfg.data`` in place. The stored config is
    resolved, so ``source.path: ${data.path}`` holds the old value: a new ``data.path`` is carried into
    ``data.source.path`` unless the overrides set that key themselves."""
    data = OmegaConf.create(data) if not isinstance(data, DictConfig) else data
    old_path = cfg.data.get("path")
    cfg.data = OmegaConf.merge(cfg.data, data)
    source = cfg.data.get("source")
    new_path = cfg.data.get("path")
    if (new_path != old_path and source is not None and source.get("path") == old_path
            and "path" not in (data.get("source") or {})):
        source.path = new_path


def load_run(path: str | Path, data: dict[str, Any] | DictConfig | None = None, device: str = "cpu") -> Run:
    """Load a run from a checkpoint file or a run folder (see :func:`resolve_checkpoint`): the data from the cache
    the run used (``data`` overrides merged into the run's data config, as ``eval.py``), the model with its
    weights, on ``device``, in eval mode."""
    ckpt = resolve_checkpoint(path)
    payload = _load_checkpoint(ckpt) if ckpt is not None else None
    cfg = OmegaConf.create(payload["recsys_config"]) if payload is not None else _folder_config(Path(path))
    if data:
        merge_data_overrides(cfg, data)
    try:
        datamodule = build_datamodule(cfg)
    except RecsysError:
        raise
    except (FileNotFoundError, OSError) as err:
        raise DataError(f"data of ckpt_path={str(path)!r}: {err}") from err
    if payload is not None:
        _check_dataset(payload, datamodule, ckpt)
    model = build_model(cfg, datamodule)
    if payload is not None:
        try:
            model.load_state_dict(payload["state_dict"])
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            raise ConfigError(f"ckpt_path={str(ckpt)!r} does not fit the model/data it is rebuilt with: "
                              f"{' '.join(first[:3])}") from err
    elif any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"ckpt_path={str(path)!r}: the run folder has no checkpoint and its model has weights")
    model = model.to(device)
    return Run(cfg, datamodule, model, ckpt)
