"""recommend.py / export_embeddings.py end to end on a tiny trained run (subprocesses: kept few)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recsys.api import load_run
from tests.integration.conftest import TINY_DATA, TRAIN_QUIET, check, run_script

REC_QUIET = ["extras.print_config=false", "progress=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 1-epoch LightGCN run on a small embedded default (its cache under the same tmp folder)."""
    tmp = tmp_path_factory.mktemp("rec")
    check(run_script("train.py", f"hydra.run.dir={tmp / 'run'}", f"paths.data_dir={tmp / 'data'}", *TINY_DATA,
                     *TRAIN_QUIET, "trainer.max_epochs=1", "model.embedding_dim=16"))
    return tmp


def rec(tmp: Path, *args: str):
    return run_script("recommend.py", f"hydra.run.dir={tmp / 'rec'}", *REC_QUIET, *args)


@pytest.mark.slow
def test_recommend_cli_matches_the_api_and_writes_all_users(trained):
    run_dir = trained / "run"
    out = trained / "two.json"
    check(rec(trained, f"ckpt_path={run_dir}", "users=[0,7]", "k=4", f"output={out}"))
    api = load_run(run_dir).recommend(["0", "7"], 4)
    cli = pd.read_json(out, dtype={"user": str, "item": str})
    assert cli[["user", "rank", "item"]].equals(api[["user", "rank", "item"]])
    pd.testing.assert_series_equal(cli["score"], api["score"].astype(float), rtol=1e-6, check_dtype=False)

    every = trained / "all.csv"
    check(rec(trained, f"ckpt_path={run_dir}", "users=all", "k=5", "chunk_size=64", f"output={every}"))
    rows = pd.read_csv(every, dtype={"user": str, "item": str})
    assert (rows.groupby("user").size() == 5).all() and rows["user"].nunique() == 300

    # export with a FAISS index, then answer from it
    export = trained / "export"
    check(run_script("scripts/export_embeddings.py", f"ckpt_path={run_dir}", f"output={export}", "index=faiss",
                     f"hydra.run.dir={trained / 'exp'}", "extras.print_config=false"))
    assert json.loads((export / "meta.json").read_text())["num_users"] == 300
    faiss_out = trained / "faiss.parquet"
    check(rec(trained, f"ckpt_path={run_dir}", "users=all", "k=5", "retrieval=faiss", f"index_path={export}",
              f"output={faiss_out}"))
    approx = pd.read_parquet(faiss_out)
    assert (approx.groupby("user").size() == 5).all()
    merged = rows.merge(approx.astype({"user": str, "item": str}), on=["user", "item"])
    assert len(merged) / len(rows) >= 0.9


@pytest.mark.slow
def test_recommend_cli_errors_exit_2_without_output(trained):
    run_dir = trained / "run"
    other = trained / "other.ckpt"
    cases = [
        ([f"ckpt_path={trained / 'missing.ckpt'}", "users=[0]"], "no such checkpoint"),
        ([f"ckpt_path={run_dir}", "users=[0,nobody,ghost]"], "unknown user id(s) 'nobody', 'ghost'"),
        ([f"ckpt_path={run_dir}", "users=[0]", "+data.source.num_items=150"], "another dataset"),
        ([f"ckpt_path={run_dir}", "session=[1,2]"], "needs a session model"),
        ([f"ckpt_path={other}", "users=[0]"], "not a readable checkpoint"),
    ]
    other.write_bytes(b"not a checkpoint")
    for args, message in cases:
        out = trained / "bad.csv"
        proc = rec(trained, *args, f"output={out}")
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], (args, proc.stderr[-2000:])
        assert not out.exists() and not list(trained.glob(".bad.csv*"))
