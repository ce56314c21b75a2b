"""recommend / load_run / export against brute-force references over the models' own scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from recsys.api import Run, load_run, resolve_checkpoint
from recsys.builders import build_datamodule, build_model
from recsys.errors import ConfigError, DataError
from recsys.recommend import prefix_loader, read_sessions_file, write_rows

ROOT = Path(__file__).resolve().parents[2]
TINY_GRAPH = ["data.source.num_users=60", "data.source.num_items=45", "data.source.min_interactions=5",
              "data.source.max_interactions=15", "data.cache_dir=null", "data.eval_batch_size=16"]
TINY_SESSIONS = ["data.source.num_items=60", "data.source.num_sessions=600", "data.source.preprocessing.min_item_support=1",
                 "data.cache_dir=null", "model.topk=[5]"]
MODELS = {
    "lightgcn": ["model=lightgcn", "model.embedding_dim=8", "model.num_layers=2", *TINY_GRAPH],
    "mf": ["model=mf", "model.embedding_dim=8", *TINY_GRAPH],
    "ngcf": ["model=ngcf", "model.embedding_dim=8", "model.layer_sizes=[8,8]", *TINY_GRAPH],
    "simgcl": ["model=simgcl", "model.embedding_dim=8", "model.num_layers=2", *TINY_GRAPH],
    "xsimgcl": ["model=xsimgcl", "model.embedding_dim=8", *TINY_GRAPH],
    "pop": ["model=pop", *TINY_GRAPH],
    "gru4rec": ["model=gru4rec", "model.layers=[8]", "sampler.n_sample=0", *TINY_SESSIONS],
    "sasrec": ["model=sasrec", "model.embedding_dim=8", "model.max_len=4", "model.num_heads=2", *TINY_SESSIONS],
    "spop": ["model=spop", "sampler=uniform", "data=synthetic_sessions", *TINY_SESSIONS],
    "item_knn": ["model=item_knn", "sampler=uniform", "data=synthetic_sessions", *TINY_SESSIONS],
    "session_pop": ["model=session_pop", "sampler=uniform", "data=synthetic_sessions", *TINY_SESSIONS],
}


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=overrides)


def build_run(name: str, seed: int = 0) -> Run:
    cfg = compose_cfg(MODELS[name])
    resolved = OmegaConf.create({k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("data", "model", "sampler")})
    resolved.seed = 0
    torch.manual_seed(seed)
    dm = build_datamodule(resolved)
    return Run(resolved, dm, build_model(resolved, dm))


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    return {}


def get(runs: dict[str, Run], name: str) -> Run:
    if name not in runs:
        runs[name] = build_run(name)
    return runs[name]


def brute_user_scores(run: Run) -> np.ndarray:
    """Dense (U, N) float32 scores straight from the model (no ranking code of recsys)."""
    model = run.model
    with torch.no_grad():
        if hasattr(model, "encoder"):
            users, items = model()
            return (users @ items.T).float().numpy()
        return model.popularity.float().expand(run.num_users, -1).numpy().copy()


def brute_topk(scores: np.ndarray, excluded: list[set[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: allowed items sorted by (score desc, item id asc), first k (numpy lexsort)."""
    out_items, out_scores = [], []
    for row, banned in zip(scores, excluded, strict=True):
        ids = np.array([i for i in range(len(row)) if i not in banned])
        order = np.lexsort((ids, -row[ids]))[:k]
        out_items.append(ids[order])
        out_scores.append(row[ids][order])
    return np.array(out_items), np.array(out_scores)


def seen_sets(run: Run) -> list[set[int]]:
    s = run.datamodule.splits
    sets = [set() for _ in range(s.num_users)]
    for u, i in zip(np.concatenate([s.train[0], s.valid[0]]), np.concatenate([s.train[1], s.valid[1]]), strict=True):
        sets[u].add(int(i))
    return sets


@pytest.mark.parametrize("name", ["lightgcn", "mf", "ngcf", "pop", "simgcl", "xsimgcl"])
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_user_topk_equals_brute_force(runs, name, exclude_seen):
    run = get(runs, name)
    k = 7
    users = run.user_map.ids[[0, 3, 17, 59, 5]]
    frame = run.recommend(list(users), k, exclude_seen=exclude_seen, chunk_size=2)
    internal = [0, 3, 17, 59, 5]
    seen = seen_sets(run)
    ref_items, ref_scores = brute_topk(brute_user_scores(run)[internal], [seen[u] if exclude_seen else set() for u in internal], k)
    assert list(frame.columns) == ["user", "rank", "item", "score"]
    assert frame["score"].dtype == np.float32
    assert len(frame) == k * len(internal)
    for row, u in enumerate(internal):
        got = frame[frame["user"] == run.user_map.ids[u]].sort_values("rank")
        assert got["rank"].tolist() == list(range(1, k + 1))
        assert got["item"].tolist() == list(run.item_map.ids[ref_items[row]])
        np.testing.assert_allclose(got["score"].to_numpy(), ref_scores[row], rtol=1e-5, atol=1e-6)
        if exclude_seen:
            assert not set(run.item_map.to_internal(got["item"])) & seen[u]


def test_mostpop_ties_go_to_the_lower_item_id(runs):
    run = get(runs, "pop")
    pop = run.model.popularity.numpy()
    frame = run.recommend([run.user_map.ids[0]], k=run.num_items, exclude_seen=False)
    items = run.item_map.to_internal(frame["item"])
    # (score desc, id asc) order, with at least one tie exercised
    assert all((pop[a] > pop[b]) or (pop[a] == pop[b] and a < b) for a, b in zip(items[:-1], items[1:], strict=True))
    assert len(np.unique(pop)) < len(pop)


def test_all_users_chunking_and_k_rows(runs):
    run = get(runs, "lightgcn")
    one = pd.concat(list(run.iter_recommend_all(5, chunk_size=10_000)), ignore_index=True)
    seven = pd.concat(list(run.iter_recommend_all(5, chunk_size=7)), ignore_index=True)
    pd.testing.assert_frame_equal(one, seven)
    counts = one.groupby("user").size()
    assert len(counts) == run.num_users and (counts == 5).all()


def brute_session_scores(run: Run, prefix: list[int]) -> np.ndarray:
    """GRU4Rec: the network run by hand item by item from a zero state; SASRec: the network on the prefix's last
    max_len items, the last position's output against the item table; S-POP: counts + popularity tiebreak."""
    model = run.model
    with torch.no_grad():
        if hasattr(model, "net") and hasattr(model.net, "item_table"):
            outputs = model.net(torch.tensor([prefix[-model.net.max_len:]]))
            return (outputs[0, -1] @ model.net.item_table.T).float().numpy()
        if hasattr(model, "net"):
            hidden = model.net.init_hidden(1)
            for item in prefix:
                out, hidden = model.net(torch.tensor([item]), hidden)
            return (out @ model.net.output_weight.T + model.net.output_bias.T).float().numpy()[0]
        counts = np.bincount(prefix, minlength=run.num_items).astype(np.float32)
        return counts + model.tiebreak.numpy()


@pytest.mark.parametrize("name", ["gru4rec", "sasrec", "spop"])
def test_session_topk_equals_brute_force(runs, name):
    run = get(runs, name)
    rng = np.random.default_rng(1)
    prefixes = [list(rng.integers(0, run.num_items, n)) for n in (1, 4, 2, 6)]
    frame = run.recommend_sessions([run.item_map.ids[p] for p in prefixes], k=6, chunk_size=3)
    assert list(frame.columns) == ["session", "rank", "item", "score"]
    for j, prefix in enumerate(prefixes):
        ref_items, ref_scores = brute_topk(brute_session_scores(run, prefix)[None], [set()], 6)
        got = frame[frame["session"] == j]
        assert got["item"].tolist() == list(run.item_map.ids[ref_items[0]])
        np.testing.assert_allclose(got["score"].to_numpy(), ref_scores[0], rtol=1e-5, atol=1e-5)
    single = run.recommend_session(list(run.item_map.ids[prefixes[1]]), k=6, exclude_seen=True)
    assert not set(run.item_map.to_internal(single["item"])) & set(prefixes[1])


def test_wrong_kind_and_bad_ids(runs):
    graph, session = get(runs, "mf"), get(runs, "gru4rec")
    with pytest.raises(ConfigError, match="session model"):
        session.recommend(["0"], 3)
    with pytest.raises(ConfigError, match="graph model"):
        graph.recommend_session(["0"], 3)
    bad = [f"nope{i}" for i in range(12)]
    with pytest.raises(DataError, match=r"unknown user id\(s\) 'nope0'.*'nope9' … \(12 in all\)") as err:
        graph.recommend(["1", *bad], 3)
    assert "nope10" not in str(err.value)
    with pytest.raises(DataError, match="empty prefix"):
        session.recommend_sessions([["1"], []], 3)


def write_csv_graph(tmp_path: Path) -> Path:
    """Interactions with string and large integer ids (not 0..n-1), 10 users × ≥ 8 items each."""
    rng = np.random.default_rng(0)
    users = [f"user-{chr(97 + u)}" if u % 2 else str(10**12 + 7 * u) for u in range(10)]
    items = [f"item/{i * 31}" if i % 3 else str(90_000_000_000 + i) for i in range(30)]
    rows = [(u, it) for u in users for it in rng.choice(items, 8, replace=False)]
    path = tmp_path / "inter.csv"
    pd.DataFrame(rows, columns=["user_id", "item_id"]).to_csv(path, index=False)
    return path


def save_checkpoint(run: Run, path: Path) -> Path:
    """A checkpoint as train.py writes it (Lightning's state_dict + hyper_parameters + recsys_config)."""
    torch.save({"state_dict": run.model.state_dict(), "hyper_parameters": dict(run.model.hparams),
                "recsys_config": OmegaConf.to_container(run.cfg, resolve=True)}, path)
    return path


def test_original_ids_round_trip_through_a_checkpoint(tmp_path):
    csv = write_csv_graph(tmp_path)
    cfg = compose_cfg(["data=csv_graph", f"data.path={csv}", f"paths.data_dir={tmp_path / 'data'}",
                       "data.source.split=random", "data.source.split_ratios=[0.6,0.2,0.2]", "model=mf",
                       "model.embedding_dim=4"])
    resolved = OmegaConf.create({k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("data", "model", "sampler")})
    resolved.seed = 0
    dm = build_datamodule(resolved)
    run = Run(resolved, dm, build_model(resolved, dm))
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    ckpt = save_checkpoint(run, folder / "checkpoints" / "epoch_000.ckpt")
    (folder / "metrics.json").write_text(json.dumps({"best_checkpoint": "/moved/away/epoch_000.ckpt"}))
    assert resolve_checkpoint(folder) == ckpt
    loaded = load_run(folder)
    raw = pd.read_csv(csv, dtype=str)
    assert set(loaded.user_map.ids) == set(raw["user_id"])
    assert set(loaded.item_map.ids) <= set(raw["item_id"]) and len(loaded.item_map.ids) > 20  # test-only items dropped
    assert any(i.startswith("item/") for i in loaded.item_map.ids) and "90000000000" in set(loaded.item_map.ids)
    for original in loaded.user_map.ids:  # original -> internal -> original
        assert loaded.user_map.to_original(loaded.user_map.to_internal([original]))[0] == original
    user = raw["user_id"][0]
    frame = loaded.recommend([user], k=5)
    assert set(frame["item"]) <= set(raw["item_id"])
    train_items = set(raw.loc[raw["user_id"] == user, "item_id"])
    s = loaded.datamodule.splits
    test_items = set(loaded.item_map.to_original(s.test[1][s.test[0] == loaded.user_map.to_internal([user])[0]]))
    assert not set(frame["item"]) & (train_items - test_items)  # train + valid items of the user excluded
    # the reloaded weights give the same rows as the model that was saved
    pd.testing.assert_frame_equal(frame, run.recommend([user], k=5))
    # a data override that points at a dataset of other sizes
    other = tmp_path / "other.csv"
    pd.read_csv(csv).iloc[: len(raw) // 2].to_csv(other, index=False)
    with pytest.raises(ConfigError, match="another dataset"):
        load_run(folder, data={"path": str(other)})
    # the data is gone (cache and file)
    csv.unlink()
    for cached in (tmp_path / "data").rglob("*.npz"):
        cached.unlink()
    with pytest.raises(DataError, match="inter.csv"):
        load_run(folder)


def test_missing_checkpoint_and_foreign_file(tmp_path):
    with pytest.raises(ConfigError, match="no such checkpoint"):
        load_run(tmp_path / "nothing.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="without checkpoints"):
        load_run(tmp_path / "empty")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ConfigError, match="not written by recsys"):
        load_run(tmp_path / "foreign.ckpt")


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_write_rows_formats_and_no_partial_file(tmp_path, suffix):
    frames = [pd.DataFrame({"user": ["a", "a"], "rank": [1, 2], "item": ["x", "y"], "score": np.float32([2.0, 1.0])}),
              pd.DataFrame({"user": ["b"], "rank": [1], "item": ["z"], "score": np.float32([0.5])})]
    out = tmp_path / f"rows{suffix}"
    assert write_rows(out, iter(frames), ["user", "rank", "item", "score"]) == 3
    back = {".csv": pd.read_csv, ".json": pd.read_json, ".parquet": pd.read_parquet}[suffix](out)
    assert back["item"].tolist() == ["x", "y", "z"] and back["rank"].tolist() == [1, 2, 1]

    def failing():
        yield frames[0]
        raise DataError("boom")

    out2 = tmp_path / f"partial{suffix}"
    with pytest.raises(DataError):
        write_rows(out2, failing(), ["user", "rank", "item", "score"])
    assert list(tmp_path.iterdir()) == [out]
    with pytest.raises(ConfigError, match="expected a file ending"):
        write_rows(tmp_path / "rows.txt", iter(frames), ["user"])


def test_sessions_file(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("1 2 3\n\n# comment\n4,5\n 6 , 7 8\n")
    assert read_sessions_file(path) == [["1", "2", "3"], ["4", "5"], ["6", "7", "8"]]


def test_trainer_predict_graph_and_session(runs):
    graph = get(runs, "lightgcn")
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    graph.model.predict_k = 4
    out = trainer.predict(graph.model, dataloaders=graph.datamodule.test_dataloader())
    users = torch.cat([o["users"] for o in out])
    items = torch.cat([o["items"] for o in out]).numpy()
    seen = seen_sets(graph)  # the test loader masks train + validation
    ref, _ = brute_topk(brute_user_scores(graph)[users.numpy()], [seen[int(u)] for u in users], 4)
    np.testing.assert_array_equal(items, ref)

    session = get(runs, "gru4rec")
    session.model.predict_k = 3
    (pred,) = trainer.predict(session.model, dataloaders=prefix_loader([[1, 2, 3], [4]]))
    for row, prefix in enumerate([[1, 2, 3], [4]]):
        ref, _ = brute_topk(brute_session_scores(session, prefix)[None], [set()], 3)
        np.testing.assert_array_equal(pred["items"][row].numpy(), ref[0])


def baseline_session_scores(run: Run, prefix: list[int]) -> np.ndarray:
    """Item-KNN: the neighbour similarities of the prefix's last item + the popularity tiebreak, by hand;
    session MostPop: the training supports."""
    model = run.model
    if hasattr(model, "neighbour_ids"):
        scores = model.tiebreak.numpy().astype(np.float32).copy()
        for j, sim in zip(model.neighbour_ids[prefix[-1]].tolist(), model.neighbour_sims[prefix[-1]].tolist(),
                          strict=True):
            scores[j] += np.float32(sim)
        return scores
    if hasattr(model, "popularity"):
        return model.popularity.numpy().astype(np.float32)
    return brute_session_scores(run, prefix)


def test_trainer_predict_of_the_baselines(runs):
    """MostPop (graph), S-POP, Item-KNN and session MostPop answer ``trainer.predict`` with the brute-force top-k."""
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    pop = get(runs, "pop")
    pop.model.predict_k = 5
    out = trainer.predict(pop.model, dataloaders=pop.datamodule.test_dataloader())
    users = torch.cat([o["users"] for o in out])
    seen = seen_sets(pop)
    ref, _ = brute_topk(brute_user_scores(pop)[users.numpy()], [seen[int(u)] for u in users], 5)
    np.testing.assert_array_equal(torch.cat([o["items"] for o in out]).numpy(), ref)
    prefixes = [[1, 2, 3], [4], [5, 5, 0, 7]]
    for name in ("spop", "item_knn", "session_pop"):
        run = get(runs, name)
        run.model.predict_k = 4
        (pred,) = trainer.predict(run.model, dataloaders=prefix_loader(prefixes))
        assert pred["items"].shape == (len(prefixes), 4), name
        for row, prefix in enumerate(prefixes):
            ref, ref_scores = brute_topk(baseline_session_scores(run, prefix)[None], [set()], 4)
            np.testing.assert_array_equal(pred["items"][row].numpy(), ref[0], err_msg=name)
            np.testing.assert_allclose(pred["scores"][row].numpy(), ref_scores[0], rtol=1e-6, err_msg=name)


def test_data_path_override_reaches_the_resolved_source_path():
    """The stored config is resolved (``source.path`` holds the old ``data.path``): eval.py and load_run carry
    a new ``data.path`` into the source, and an explicit ``data.source.path`` wins."""
    from omegaconf import OmegaConf

    from recsys.api import merge_data_overrides

    stored = {"data": {"path": "/old", "source": {"path": "/old", "dataset": "gowalla"}}}
    cfg = OmegaConf.create(stored)
    merge_data_overrides(cfg, {"path": "/new"})
    assert cfg.data.path == "/new" and cfg.data.source.path == "/new"
    cfg = OmegaConf.create(stored)
    merge_data_overrides(cfg, {"path": "/new", "source": {"path": "/elsewhere"}})
    assert cfg.data.source.path == "/elsewhere"
    cfg = OmegaConf.create(stored)
    merge_data_overrides(cfg, {"batch_size": 7})
    assert cfg.data.source.path == "/old" and cfg.data.batch_size == 7
