"""Speed and memory of the hot paths, one section per subcommand (numbers go to ``docs/benchmarks.md``).

    python scripts/benchmark.py --list
    python scripts/benchmark.py data-gowalla [--path ../shared/datasets/gowalla] [--repeat 3]

Add a section with ``@section("name", "help")`` on a function ``(args) -> list[Row]``; its rows are printed as
a Markdown table. Times are the best of ``--repeat`` runs (wall clock); peak memory is measured in a separate
run with :mod:`tracemalloc` (Python and NumPy allocations of that phase, not the interpreter), and the
process's peak RSS (``ru_maxrss``) is printed at the end.
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import json
import logging
import platform
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from recsys.api import Run, load_run
from recsys.builders import build_datamodule, build_model
from recsys.data import cache
from recsys.data.bpr_batches import BPREpochSampler
from recsys.data.eval_batches import RankingEvalSet
from recsys.data.graph_datamodule import GraphDataModule
from recsys.data.session_batches import plan_session_parallel
from recsys.data.session_datamodule import SessionDataModule
from recsys.data.sources import files as files_mod
from recsys.data.sources.session_files import PreparedSessionSource
from recsys.data.sources.session_synthetic import SyntheticSessionSource
from recsys.data.sources.split_folder import SplitFolderSource, read_user_lines
from recsys.data.sources.synthetic import SyntheticGraphSource
from recsys.export import FaissRetriever, export_embeddings
from recsys.info import DatasetInfo
from recsys.metrics import TopKMetrics, rank_topk
from recsys.models.components.adjacency import normalized_adjacency
from recsys.models.components.lightgcn import LightGCNEncoder
from recsys.models.components.ngcf import NGCFEncoder
from recsys.models.graph_module import GraphRecommender
from recsys.models.gru4rec_module import GRU4Rec
from recsys.optim import AdagradM
from recsys.sampling import SessionNegativeSampler, UniformNegativeSampler
from recsys.train import train
from recsys.utils.allocator import retain_freed_memory

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    phase: str
    seconds: float
    peak_mib: float | None = None
    note: str = ""


SECTIONS: dict[str, tuple[str, Callable[[argparse.Namespace], list[Row]], Callable[[argparse.ArgumentParser], None]]] = {}


def section(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None):  # noqa: A002
    """Register a benchmark section (a subcommand)."""
    def register(fn: Callable[[argparse.Namespace], list[Row]]) -> Callable[[argparse.Namespace], list[Row]]:
        SECTIONS[name] = (help, fn, arguments)
        return fn

    return register


def measure(fn: Callable[[], Any], repeat: int, setup: Callable[[], None] = lambda: None) -> tuple[float, float, Any]:
    """(best wall seconds over ``repeat`` runs, tracemalloc peak MiB of one more run, last result)."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        setup()
        gc.collect()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
        del result
    setup()
    gc.collect()
    tracemalloc.start()
    result = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return best, peak / 2**20, result


def _gowalla_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", default=str(ROOT.parent / "shared" / "datasets" / "gowalla"),
                   help="folder with train.txt/test.txt (default: ../shared/datasets/gowalla)")


def _pandas_int_tokens(path: Path):
    """Every integer of a ragged whitespace-separated file and its 0-based line, parsed by pandas' C reader."""
    lines = pd.read_csv(io.BytesIO(path.read_bytes()), header=None, names=["line"], sep="\x01", dtype=str,
                        skip_blank_lines=False)["line"]
    tokens = lines.str.split().explode().dropna()
    return tokens.astype(np.int64).to_numpy(), tokens.index.to_numpy()


@section("data-gowalla", "Gowalla split files: parse, load from raw, write and load the cache", _gowalla_args)
def bench_data_gowalla(args: argparse.Namespace) -> list[Row]:
    source = SplitFolderSource(dataset="gowalla", path=args.path)
    files = source.files()
    rows = []
    size_mib = (files["train.txt"].stat().st_size + files["test.txt"].stat().st_size) / 2**20

    t, peak, _ = measure(lambda: read_user_lines(files["train.txt"]), args.repeat)
    rows.append(Row("parse train.txt (vectorised)", t, peak, f"{files['train.txt'].stat().st_size / 2**20:.1f} MiB"))
    t_pd, peak, _ = measure(lambda: _pandas_int_tokens(files["train.txt"]), args.repeat)
    rows.append(Row("the same tokens with pandas (a string per line, split, explode)", t_pd, peak,
                    f"{t_pd / t:.1f}× the vectorised parse (recsys.data.sources.int_tokens stays while ≥ 2×)"))
    t, peak, splits = measure(source.build, args.repeat)
    rows.append(Row("load from raw (parse + preprocess)", t, peak,
                    f"{size_mib:.1f} MiB; {len(splits.train[0]):,} train / {len(splits.test[0]):,} test"))
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "gowalla.npz"
        t, peak, _ = measure(lambda: splits.save(target), args.repeat)
        rows.append(Row("write cache (.npz, atomic)", t, peak, f"{target.stat().st_size / 2**20:.1f} MiB"))
        cache_dir = Path(tmp) / "processed"
        cache.load_or_build(source, cache_dir)

        t, peak, _ = measure(lambda: cache.load_or_build(source, cache_dir), args.repeat, files_mod.forget_file_hashes)
        rows.append(Row("load from cache (sha256 of files + .npz)", t, peak))

        def first_build() -> None:
            files_mod.forget_file_hashes()
            for p in cache_dir.glob("*.npz"):
                p.unlink()

        t, peak, _ = measure(lambda: cache.load_or_build(source, cache_dir), args.repeat, first_build)
        rows.append(Row("cache miss: fingerprint + build + write", t, peak))
    return rows


def _graph_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", default=str(ROOT.parent / "shared" / "datasets" / "gowalla"),
                   help="split folder (default: ../shared/datasets/gowalla); 'synthetic' for the embedded default")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--embedding-dim", type=int, default=64)
    p.add_argument("--num-layers", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")


def _time(fn: Callable[[], Any], repeat: int, device: str = "cpu") -> float:
    """Best wall-clock time of ``repeat`` calls (waiting for queued CUDA kernels before stopping the clock)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


@section("graph-train-eval", "graph models: adjacency, epoch sampling, training step, full-ranking evaluation", _graph_args)
def bench_graph(args: argparse.Namespace) -> list[Row]:
    """Torch phases report time only (tracemalloc does not see torch's allocator); see the peak RSS line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    splits, info = _graph_data(args.path)
    train, test = info.train, splits.csr("test")
    device = args.device
    where = device if device != "cpu" else f"{torch.get_num_threads()} threads"
    note = f"{splits.num_users:,} users, {splits.num_items:,} items, {train.nnz:,} train edges; {where}"
    edges = train.pairs()
    t = _time(lambda: normalized_adjacency(*edges, splits.num_users, splits.num_items, "sym"), args.repeat)
    rows = [Row("build normalised adjacency (symmetric CSR)", t, None, note)]

    sampler = UniformNegativeSampler().bind(train)
    epoch = BPREpochSampler(train, sampler, args.batch_size, seed=0)
    t = _time(lambda: sum(1 for _ in epoch.batches()), args.repeat)
    rows.append(Row("draw one BPR epoch (all batches, negatives rejected)", t, None,
                    f"{epoch.num_batches()} batches of {args.batch_size}"))

    batch = {key: value.to(device) for key, value in next(epoch.batches()).items()}
    for layers in sorted({0, args.num_layers}):
        model = _graph_model(info, "lightgcn", args.embedding_dim, layers, device)
        for full in ([False, True] if layers else [False]):
            step = _bare_step(model, batch, full_pass=full)
            step()
            t = _time(step, args.repeat, device)
            name = "MF (0 layers)" if layers == 0 else f"LightGCN ({layers} layers)"
            how = ", whole-graph last layer (naive)" if full else ""
            rows.append(Row(f"training step {name}{how}, d={args.embedding_dim}", t, None,
                            f"≈ {t * epoch.num_batches():.1f} s per epoch"))

    # the custom autograd (prebuilt CSR transpose) vs torch's built-in sparse backward
    adj = normalized_adjacency(*edges, splits.num_users, splits.num_items, "sym").to(device)
    x = torch.randn(adj.size, args.embedding_dim, device=device, requires_grad=True)

    def custom() -> None:
        (adj @ x).sum().backward()

    coo = adj.matrix.to_sparse_coo().coalesce()

    def builtin() -> None:
        torch.sparse.mm(coo, x).sum().backward()

    rows.append(Row("one propagation fwd+bwd, custom CSR autograd", _time(custom, args.repeat, device), None))
    rows.append(Row("one propagation fwd+bwd, torch.sparse.mm (COO) autograd", _time(builtin, args.repeat, device), None))

    model = _graph_model(info, "lightgcn", args.embedding_dim, args.num_layers, device).eval()
    metric = TopKMetrics((20,)).to(device)
    evalset = RankingEvalSet(train, test, 1024)
    t = _time(lambda: _evaluate_graph(model, evalset, metric, device), args.repeat, device)
    rows.append(Row("full-ranking test evaluation, all test users", t, None,
                    f"{evalset.users.numel():,} users × {splits.num_items:,} items, chunks of 1024"))
    return rows


def _graph_data(path: str):
    """(splits, DatasetInfo) of the embedded default (``synthetic``) or a Gowalla-format split folder."""
    source = SyntheticGraphSource() if path == "synthetic" else SplitFolderSource(dataset="gowalla", path=path)
    splits = source.build()
    return splits, DatasetInfo(splits.num_users, splits.num_items, splits.csr("train"))


def _graph_model(info, name: str, dim: int, layers: int, device: str):
    torch.manual_seed(0)
    encoder = NGCFEncoder if name == "ngcf" else LightGCNEncoder
    return GraphRecommender(info, encoder=partial(encoder), optimizer=partial(torch.optim.Adam, lr=1e-3, fused=True),
                            embedding_dim=dim, num_layers=layers).to(device)


def _bare_step(model, batch, full_pass: bool = False) -> Callable[[], None]:
    """One BPR step without Lightning (:func:`_optimiser_steps`); ``full_pass``: the whole-graph pass
    (``full_pass_fraction`` 0)."""
    opt = model.configure_optimizers()
    model.full_pass_fraction = 0.0 if full_pass else type(model).full_pass_fraction
    return lambda: _optimiser_steps(model, opt, [batch])


def _evaluate_graph(model, evalset, metric, device: str) -> None:
    """The full-ranking pass as Lightning runs it: propagate once, then every batch (built and moved as the
    DataLoader + Lightning would)."""
    with torch.no_grad():
        model.prepare_scoring()
        for i in range(len(evalset)):
            model.evaluate_batch({key: value.to(device) for key, value in evalset[i].items()}, metric)
        metric.compute()
        metric.reset()
        model.finish_scoring()


def _session_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", default="synthetic",
                   help="'synthetic' (embedded default, B=64) or a folder of RSC15 prepared files (train_full → test, B=32)")
    p.add_argument("--steps", type=int, default=320, help="timed training steps (whole chunks of --chunk)")
    p.add_argument("--chunk", type=int, default=64, help="steps per chunk (train.py's auto picks ~60)")
    p.add_argument("--n-sample", type=int, default=2048, help="extra shared negatives")
    p.add_argument("--device", default="cpu")


def _session_setup(path: str, n_sample: int, device: str, steps_per_chunk: int):
    """(datamodule, GRU4Rec model with its optimiser configured, batch size) as ``experiment=gru4rec_rsc15``."""
    synthetic = path == "synthetic"
    source = SyntheticSessionSource(seed=0) if synthetic else PreparedSessionSource(path=path)
    batch_size = 64 if synthetic else 32
    dm = SessionDataModule(source, batch_size=batch_size, eval_batch_size=512, validate_on_test=True,
                           negative_sampler=SessionNegativeSampler(n_sample=n_sample, alpha=0.75),
                           steps_per_chunk=steps_per_chunk)
    dm.setup()
    torch.manual_seed(0)
    model = GRU4Rec(dm.info, partial(AdagradM, lr=0.1), logq=1.0, dropout_embed=0.1).to(device)
    return dm, model, batch_size


def _optimiser_steps(model, opt, chunk) -> int:
    """The bare step loop of every section, without Lightning: for each step of ``chunk`` (``model.chunk_steps``),
    the model's own loss (``batch_loss``) → backward → the optimiser. Returns the rows (or events) trained on."""
    rows = 0
    for step in model.chunk_steps(chunk):
        opt.zero_grad()
        model.batch_loss(step)[0].backward()
        opt.step()
        # events (session models: targets, the real ones of a sequence batch) or BPR rows
        rows += int(step["mask"].sum() if "mask" in step else step["targets"].numel() if "targets" in step
                    else step["users"].numel())
    return rows


def _session_loop(model, chunks, device: str) -> Callable[[int, int], None]:
    """The bare step loop: loss and gradients → AdagradM per session-parallel step, no Lightning; ``train(n,
    offset)`` runs the steps of ``n`` chunks in order (``model.chunk_steps``)."""
    opt = model.configure_optimizers()
    model.on_train_epoch_start()

    def train(n: int, offset: int = 0) -> None:
        for k in range(n):
            _optimiser_steps(model, opt, {key: v.to(device) for key, v in chunks[(offset + k) % len(chunks)].items()})

    return train


@section("session-gru4rec", "GRU4Rec: epoch planning, training steps/s, next-item evaluation events/s", _session_args)
def bench_session(args: argparse.Namespace) -> list[Row]:
    """Without Lightning (the ``train-epoch`` section measures ``train.py``)."""
    device = args.device
    dm, model, batch_size = _session_setup(args.path, args.n_sample, device, args.chunk)
    splits = dm.splits
    note = (f"{splits.num_items:,} items, {splits.train.num_events:,} train events, B={batch_size}, "
            f"n_sample={args.n_sample}, {torch.get_num_threads()} threads, {device}")
    rows = [Row("plan one epoch of session-parallel steps", _time(lambda: plan_session_parallel(splits.train, batch_size), args.repeat), None, note)]

    chunks = list(dm.train_dataloader())  # args.chunk steps per chunk
    n = max(1, min(len(chunks) - 1, round(args.steps / args.chunk)))
    train = _session_loop(model, chunks, device)
    train(1)
    t = _time(lambda: train(n, 1), args.repeat, device)
    steps = sum(c["ptr"].numel() - 1 for c in chunks[1 : 1 + n])
    events = sum(int(c["ptr"][-1]) for c in chunks[1 : 1 + n])
    rows.append(Row(f"{steps} training steps in chunks of {args.chunk} (forward + backward + Adagrad)", t, None,
                    f"{steps / t:.0f} steps/s, {events / t:,.0f} events/s; "
                    f"{sum(c['ptr'].numel() - 1 for c in chunks)} steps per epoch"))

    test_chunks = [{k: v.to(device) for k, v in b.items()} for b in dm.test_dataloader()]
    model.eval()

    def evaluate() -> None:
        model.on_test_epoch_start()
        with torch.no_grad():
            for b in test_chunks:
                model.evaluate_batch(b, model.test_metrics)
        model.test_metrics.reset()

    t = _time(evaluate, args.repeat, device)
    rows.append(Row("next-item test evaluation (rank over all items)", t, None,
                    f"{splits.test.num_steps:,} events, {splits.test.num_steps / t:,.0f} events/s"))
    return rows


def _train_epoch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--graph-path", default=str(ROOT.parent / "shared" / "datasets" / "gowalla"),
                   help="Gowalla split folder, or 'synthetic' (the embedded default); '' skips the graph part")
    p.add_argument("--graph-model", default="lightgcn", choices=["lightgcn", "ngcf", "mf"])
    p.add_argument("--graph-batch-size", type=int, default=0, help="0: 2048 (LightGCN, MF), 1024 (NGCF, official)")
    p.add_argument("--session-path", default=str(ROOT.parent / "shared" / "datasets" / "rsc15_100k"),
                   help="RSC15 prepared folder, or 'synthetic'; '' skips the session part")
    p.add_argument("--session-model", default="gru4rec", choices=["gru4rec", "sasrec"],
                   help="session model: experiment=<model>_rsc15 on RSC15, model=<model> on 'synthetic'")
    p.add_argument("--epochs", type=int, default=3,
                   help="train.py epochs (>= 3): the median of those between the first and the last is reported")
    p.add_argument("--json", default="benchmark.json", help="where the flat results go")
    p.add_argument("--override", action="append", default=[], help="extra train.py override (repeatable)")


def _compose(overrides: list[str], out: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.output_dir={out}", f"paths.work_dir={ROOT}",
                                           f"paths.data_dir={out.parent / 'data'}", "extras.print_config=false",
                                           "test=false", "~callbacks.progress_bar", "trainer.enable_progress_bar=false"])


def _train_py_epoch(overrides: list[str], out: Path, epochs: int) -> tuple[float, int]:
    """``python train.py <overrides>`` in this process (Hydra compose; Lightning and every callback included) for
    ``epochs`` epochs, validated after the last only: (median seconds of the training epochs between the first
    and the last, steps per chunk used)."""
    if epochs < 3:
        raise SystemExit("--epochs must be >= 3 (the first epoch warms up, the last one validates)")
    cfg = _compose([*overrides, f"trainer.max_epochs={epochs}", f"trainer.check_val_every_n_epoch={epochs + 1}",
                    "+trainer.limit_val_batches=1"], out)
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    chunk_log = logging.getLogger("recsys.data.chunk_size")
    chunk_log.addHandler(handler)
    chunk_log.setLevel(logging.INFO)
    try:
        train(cfg)
    finally:
        chunk_log.removeHandler(handler)
    with open(out / "csv" / "metrics.csv", newline="") as f:
        seconds = [float(r["time/epoch_seconds"]) for r in csv.DictReader(f) if r.get("time/epoch_seconds")]
    chunk = next((int(m.split("auto: ")[1].split()[0]) for m in messages if "steps_per_chunk=auto:" in m), 0)
    return statistics.median(seconds[1:-1]), chunk


def _bare_epoch(overrides: list[str], out: Path) -> tuple[float, int, Any, Any]:
    """An epoch of the same data and model without Lightning: the training loader's chunks as they are drawn
    (negatives included), loss and gradients → optimiser per step (:func:`_optimiser_steps`); the second of two
    epochs is timed (the first warms up, as in train.py). (seconds, events or rows, dm, model)."""
    cfg = _compose([*overrides, "data.steps_per_chunk=64"], out)
    torch.manual_seed(0)
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)
    model.train()
    opt = model.configure_optimizers()
    loader = dm.train_dataloader()
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        model.on_train_epoch_start()
        count = 0
        gc.collect()
        start = time.perf_counter()
        for chunk in loader:
            count += _optimiser_steps(model, opt, chunk)
        seconds = time.perf_counter() - start
    return seconds, count, dm, model


@section("train-epoch", "train.py epochs (Lightning included) against their floors measured here; writes benchmark.json",
         _train_epoch_args)
def bench_train_epoch(args: argparse.Namespace) -> list[Row]:
    """Graph (LightGCN on Gowalla by default): a training epoch of ``train.py`` (the median of the ``--epochs``
    epochs between the first and the last, which validates; no test) beside (a) the naive floor = batches × L
    whole-graph CSR products forward + L backward (NGCF: the whole-graph encoder forward + backward), (b) the
    bare step loop: an epoch of the same loader and model without Lightning; then the full-ranking test of all
    users beside its floor (the score products into a buffer + top-50). Session (``experiment=gru4rec_rsc15``):
    a train.py training epoch beside the bare step loop. ``--repeat`` applies to the floors."""
    retain_freed_memory()  # as train.py's main does: the same allocator for train.py, the bare loop and the floors
    logging.getLogger("recsys").setLevel(logging.WARNING)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    rows: list[Row] = []
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.graph_path:
            name = args.graph_model
            batch_size = args.graph_batch_size or (1024 if name == "ngcf" else 2048)
            data = (["data=synthetic_graph"] if args.graph_path == "synthetic"
                    else ["data=gowalla", f"data.path={args.graph_path}", "data.validate_on_test=true"])
            overrides = [*data, f"model={name}", f"data.batch_size={batch_size}", *args.override]
            epoch_s, chunk = _train_py_epoch(overrides, Path(tmp) / "graph", args.epochs)
            bare, _, dm, model = _bare_epoch(overrides, Path(tmp) / "bare")
            info = dm.info
            train = info.train
            num_batches = dm.epoch_sampler().num_batches()
            note = (f"{name}, {info.num_users:,} users × {info.num_items:,} items, {num_batches} batches of "
                    f"{batch_size}, {chunk or 1} steps per chunk")
            rows.append(Row("train.py: one training epoch (Lightning, callbacks; validation not in it)", epoch_s, None,
                            note))
            rows.append(Row("bare step loop: the same epoch without Lightning (loader, batch_loss, backward, optimiser)",
                            bare, None, f"train.py / bare loop = {epoch_s / bare:.2f}"))
            results["train_epoch_s"], results["train_bare_loop_s"] = epoch_s, bare

            layers = model.encoder.num_layers if hasattr(model.encoder, "num_layers") else len(model.encoder.layers)
            adj = normalized_adjacency(*train.pairs(), info.num_users, info.num_items, model.encoder.adjacency_norm)
            x = torch.randn(adj.size, 64, requires_grad=True)
            if name == "ngcf":  # products + dense layers: the whole-graph encoder forward + backward
                naive = lambda: model.encoder(adj).sum().backward()  # noqa: E731
            else:
                naive = lambda: [(adj @ x).sum().backward() for _ in range(layers)]  # noqa: E731
            floor = _time(naive, args.repeat) * num_batches if layers else 0.0
            rows.append(Row("naive floor: batches × whole-graph propagation fwd+bwd", floor, None,
                            f"train.py / floor = {epoch_s / floor:.2f}" if floor else "MF: no propagation"))
            results["train_floor_s"] = floor

            splits = dm.splits
            evalset = RankingEvalSet(train, splits.csr("test"), 1024)
            model.eval()
            metric = TopKMetrics((10, 20, 50))
            eval_s = _time(lambda: _evaluate_graph(model, evalset, metric, "cpu"), args.repeat)
            with torch.no_grad():
                user_emb, item_emb = (e.detach().float() for e in model())
            block = max(1, model.score_block_elements // info.num_items)  # the evaluation's own cache-sized blocks
            buffer = torch.empty(block, info.num_items)

            def eval_floor() -> None:
                for lo in range(0, evalset.users.numel(), block):
                    users = evalset.users[lo : lo + block]
                    rank_topk(torch.matmul(user_emb[users], item_emb.T, out=buffer[: users.numel()]), 50)

            eval_floor_s = _time(eval_floor, args.repeat)
            rows.append(Row("full-ranking test evaluation, all test users (propagation, mask, top-50, metrics)", eval_s,
                            None, f"{evalset.users.numel():,} users"))
            rows.append(Row("its floor: score products into a buffer + top-50 (same blocks)", eval_floor_s, None,
                            f"evaluation / floor = {eval_s / eval_floor_s:.2f}"))
            results["eval_s"], results["eval_floor_s"] = eval_s, eval_floor_s

        if args.session_path:
            name = args.session_model
            data = ([f"model={name}"] if args.session_path == "synthetic"
                    else [f"experiment={name}_rsc15", f"data.path={args.session_path}"])
            overrides = [*data, *args.override]
            epoch_s, chunk = _train_py_epoch(overrides, Path(tmp) / "session", args.epochs)
            bare, events, dm, _ = _bare_epoch(overrides, Path(tmp) / "session_bare")
            label = {"gru4rec": "GRU4Rec", "sasrec": "SASRec"}[name]
            rows.append(Row(f"train.py: one {label} training epoch (Lightning, callbacks; validation not in it)", epoch_s, None,
                            f"{events:,} events, {events / epoch_s:,.0f} events/s, {chunk or 1} steps per chunk"))
            rows.append(Row("bare step loop: the same epoch without Lightning", bare, None,
                            f"{events / bare:,.0f} events/s; train.py / bare loop = {bare / epoch_s:.2f}× its speed"))
            results["session_train_events_per_s"] = events / epoch_s
            results["session_floor_events_per_s"] = events / bare
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.json).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.json}: {json.dumps(results, sort_keys=True)}", file=sys.stderr)
    return rows


def _faiss_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", default=None, help="a run folder or checkpoint (its data and trained embeddings); "
                   "default: an untrained LightGCN on --path")
    p.add_argument("--path", default="synthetic", help="without --ckpt: 'synthetic' (embedded default) or a Gowalla split folder")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--chunk-size", type=int, default=1024)


@section("faiss-retrieval", "recommend for all users: exact top-k vs FAISS IndexFlatIP (recall@k overlap, seconds)", _faiss_args)
def bench_faiss(args: argparse.Namespace) -> list[Row]:
    """Exact = ``Run.iter_recommend_all`` (model scores, train+valid masked, rank_topk); FAISS = an export's flat
    inner-product index searched for ``k + max seen`` items per chunk, seen items dropped. Overlap = mean over users
    of |exact ∩ faiss| / k."""
    if args.ckpt:
        run = load_run(args.ckpt)
    else:
        source = (SyntheticGraphSource() if args.path == "synthetic"
                  else SplitFolderSource(dataset="gowalla", path=args.path))
        dm = GraphDataModule(source, validate_on_test=True)
        dm.setup()
        torch.manual_seed(0)
        model = GraphRecommender(dm.info, encoder=partial(LightGCNEncoder),
                                 optimizer=partial(torch.optim.Adam), embedding_dim=64, num_layers=3)
        run = Run(None, dm, model)
    k, users = args.k, np.arange(run.num_users)
    note = f"{run.num_users:,} users × {run.num_items:,} items, k={k}, {torch.get_num_threads()} threads"
    results: dict[str, pd.DataFrame] = {}

    def exact() -> None:  # a new Run propagates again, as a fresh process would
        fresh = Run(run.cfg, run.datamodule, run.model)
        results["exact"] = pd.concat(list(fresh.iter_recommend_all(k, chunk_size=args.chunk_size)), ignore_index=True)

    with tempfile.TemporaryDirectory() as tmp:
        export_seconds = _time(lambda: export_embeddings(run, Path(tmp) / "e", index="faiss"), 1)
        retriever = FaissRetriever(Path(tmp) / "e", run)

        def approx() -> None:
            results["faiss"] = pd.concat(list(retriever.iter_recommend(users, k, chunk_size=args.chunk_size)),
                                         ignore_index=True)

        t_exact, t_faiss = _time(exact, args.repeat), _time(approx, args.repeat)
    a, b = results["exact"], results["faiss"]
    hits = a.merge(b, on=["user", "item"]).groupby("user").size().reindex(a["user"].unique(), fill_value=0)
    overlap = float((hits / a.groupby("user").size()).mean())
    return [
        Row("export embeddings + IndexFlatIP", export_seconds, None, note),
        Row(f"exact top-{k}, all users (model scores, masked, rank_topk)", t_exact, None, f"{len(a):,} rows"),
        Row(f"FAISS IndexFlatIP top-{k}, all users (k + max seen, seen dropped)", t_faiss, None,
            f"recall@{k} overlap with exact = {overlap:.4f}"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="list the sections")
    sub = parser.add_subparsers(dest="section")
    for name, (help_text, _, arguments) in SECTIONS.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--repeat", type=int, default=3, help="timed runs (best is reported)")
        arguments(p)
    args = parser.parse_args(argv)
    if args.list or not args.section:
        for name, (help_text, _, _) in SECTIONS.items():
            print(f"{name:<20}{help_text}")
        return
    rows = SECTIONS[args.section][1](args)

    print(f"## {args.section}  (python {platform.python_version()}, numpy {np.__version__}, "
          f"{platform.machine()}, best of {args.repeat})\n")
    print("| phase | seconds | peak MiB (tracemalloc) | note |")
    print("|---|---:|---:|---|")
    for r in rows:
        peak = f"{r.peak_mib:.0f}" if r.peak_mib is not None else ""
        print(f"| {r.phase} | {r.seconds:.3f} | {peak} | {r.note} |")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"\nprocess peak RSS: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
