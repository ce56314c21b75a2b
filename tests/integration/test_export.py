"""Embedding export and FAISS retrieval against the models' own scores and the exact top-k."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.errors import ConfigError
from recsys.export import FaissRetriever, export_embeddings
from tests.unit.test_recommend import (
    brute_session_scores,
    brute_topk,
    brute_user_scores,
    build_run,
    seen_sets,
)


@pytest.fixture(scope="module")
def lightgcn():
    return build_run("lightgcn")


def test_graph_export_reproduces_the_scores(lightgcn, tmp_path):
    out = tmp_path / "export"
    meta = export_embeddings(lightgcn, out, index="faiss")
    users, items = np.load(out / "users.npy"), np.load(out / "items.npy")
    assert users.dtype == np.float32 and users.shape == (lightgcn.num_users, 8) and items.shape == (lightgcn.num_items, 8)
    np.testing.assert_allclose(users @ items.T, brute_user_scores(lightgcn), rtol=1e-5, atol=1e-6)
    ids = pd.read_csv(out / "item_ids.csv", dtype={"id": str})
    assert ids["index"].tolist() == list(range(lightgcn.num_items)) and ids["id"].tolist() == list(lightgcn.item_map.ids)
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk == meta and meta["model"] == "lightgcn" and meta["dim"] == 8
    assert meta["scoring"] == "inner product" and meta["dataset"] == "synthetic_graph" and meta["index"] == "items.faiss"
    export_embeddings(lightgcn, out)  # re-export over an earlier export
    assert not (out / "items.faiss").exists() and not list(tmp_path.glob(".export*"))


@pytest.mark.parametrize(("name", "dim"), [("ngcf", 8 + 2 * 8), ("mf", 8), ("simgcl", 8), ("xsimgcl", 8)])
def test_graph_model_exports_reproduce_the_scores_and_name_the_model(name, dim, tmp_path):
    """NGCF's exported rows are the concatenated layer outputs (d + Σ d_l columns), MF's the ego table, SimGCL's and
    XSimGCL's the clean (noise-free) mean of layers 1..L (tests/unit/test_simgcl.py)."""
    run = build_run(name)
    meta = export_embeddings(run, tmp_path / name)
    users, items = np.load(tmp_path / name / "users.npy"), np.load(tmp_path / name / "items.npy")
    assert meta["model"] == name and meta["dim"] == dim and users.shape == (run.num_users, dim)
    np.testing.assert_allclose(users @ items.T, brute_user_scores(run), rtol=1e-5, atol=1e-6)


def test_faiss_returns_k_items_overlapping_exact_topk(lightgcn, tmp_path):
    export_embeddings(lightgcn, tmp_path / "e", index="faiss")
    retriever = FaissRetriever(tmp_path / "e", lightgcn)
    users = np.arange(lightgcn.num_users)
    frame = pd.concat(list(retriever.iter_recommend(users, 10, chunk_size=13)), ignore_index=True)
    assert (frame.groupby("user").size() == 10).all() and frame["user"].nunique() == lightgcn.num_users
    seen = seen_sets(lightgcn)
    ref, _ = brute_topk(brute_user_scores(lightgcn), seen, 10)
    overlaps = []
    for u in users:
        got = set(lightgcn.item_map.to_internal(frame.loc[frame["user"] == lightgcn.user_map.ids[u], "item"]))
        assert not got & seen[u]
        overlaps.append(len(got & set(ref[u])) / 10)
    assert np.mean(overlaps) >= 0.9


def test_gru4rec_export_and_baselines_without_embeddings(tmp_path):
    run = build_run("gru4rec")
    meta = export_embeddings(run, tmp_path / "g")
    table = np.load(tmp_path / "g" / "items.npy")
    assert meta["dim"] == 9 and not (tmp_path / "g" / "users.npy").exists()
    with torch.no_grad():
        hidden = run.model.net.init_hidden(1)
        out, _ = run.model.net(torch.tensor([3]), hidden)
    query = np.concatenate([out.numpy()[0], [1.0]])
    np.testing.assert_allclose(table @ query, brute_session_scores(run, [3]), rtol=1e-5, atol=1e-5)
    for name in ("pop", "spop"):
        with pytest.raises(ConfigError, match="no embeddings"):
            export_embeddings(build_run(name), tmp_path / name)
        assert not (tmp_path / name).exists()


def test_sasrec_exports_its_item_table(tmp_path):
    run = build_run("sasrec")
    meta = export_embeddings(run, tmp_path / "s")
    table = np.load(tmp_path / "s" / "items.npy")
    assert meta["model"] == "sasrec" and meta["dim"] == 8 and not (tmp_path / "s" / "users.npy").exists()
    np.testing.assert_array_equal(table, run.model.net.item_table.detach().numpy())
    prefix = [3, 1, 4, 1, 5, 9]
    with torch.no_grad():
        query = run.model.net(torch.tensor([prefix[-4:]]))[0, -1].numpy()
    np.testing.assert_allclose(table @ query, brute_session_scores(run, prefix), rtol=1e-5, atol=1e-5)


def test_missing_faiss_names_the_extra(lightgcn, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[serve\]"'):
        export_embeddings(lightgcn, tmp_path / "x", index="faiss")
    assert not (tmp_path / "x").exists()


def test_index_of_another_dataset_is_refused(lightgcn, tmp_path):
    export_embeddings(build_run("mf"), tmp_path / "mf", index="faiss")
    other = build_run("pop")  # same data: accepted
    FaissRetriever(tmp_path / "mf", other)
    meta = json.loads((tmp_path / "mf" / "meta.json").read_text())
    meta["num_items"] += 1
    (tmp_path / "mf" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="another dataset"):
        FaissRetriever(tmp_path / "mf", lightgcn)


@pytest.mark.slow
def test_benchmark_faiss_section_on_the_embedded_default():
    """scripts/benchmark.py faiss-retrieval runs on the embedded default; the flat index matches exact top-20."""
    import re
    import subprocess

    from tests.integration.conftest import ROOT

    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "faiss-retrieval", "--repeat", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    overlap = float(re.search(r"recall@20 overlap with exact = ([0-9.]+)", proc.stdout).group(1))
    assert overlap >= 0.9, proc.stdout
