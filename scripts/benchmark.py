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
import gc
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@section("data-gowalla", "Gowalla split files: parse, load from raw, write and load the cache", _gowalla_args)
def bench_data_gowalla(args: argparse.Namespace) -> list[Row]:
    from recsys.data import cache
    from recsys.data.sources import files as files_mod
    from recsys.data.sources.split_folder import SplitFolderSource, read_user_lines

    source = SplitFolderSource(dataset="gowalla", path=args.path)
    files = source.files()
    rows = []
    size_mib = (files["train.txt"].stat().st_size + files["test.txt"].stat().st_size) / 2**20

    t, peak, _ = measure(lambda: read_user_lines(files["train.txt"]), args.repeat)
    rows.append(Row("parse train.txt (vectorised)", t, peak, f"{files['train.txt'].stat().st_size / 2**20:.1f} MiB"))
    t, peak, splits = measure(source.build, args.repeat)
    rows.append(Row("load from raw (parse + preprocess)", t, peak,
                    f"{size_mib:.1f} MiB; {len(splits.train[0]):,} train / {len(splits.test[0]):,} test"))
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "gowalla.npz"
        t, peak, _ = measure(lambda: splits.save(target), args.repeat)
        rows.append(Row("write cache (.npz, atomic)", t, peak, f"{target.stat().st_size / 2**20:.1f} MiB"))
        cache_dir = Path(tmp) / "processed"
        cache.load_or_build(source, cache_dir)

        def forget_hashes() -> None:  # a new process would hash the files again
            files_mod._HASH_MEMO.clear()

        t, peak, _ = measure(lambda: cache.load_or_build(source, cache_dir), args.repeat, forget_hashes)
        rows.append(Row("load from cache (sha256 of files + .npz)", t, peak))

        def first_build() -> None:
            forget_hashes()
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
    import torch

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
    import functools

    import torch

    from recsys.data.eval_batches import RankingEvalSet
    from recsys.data.interactions import DatasetInfo
    from recsys.data.sources.split_folder import SplitFolderSource
    from recsys.data.sources.synthetic import SyntheticGraphSource
    from recsys.metrics import TopKMetrics
    from recsys.models.components.lightgcn import LightGCNEncoder
    from recsys.models.graph_module import GraphRecommender
    from recsys.sampling import BPREpochSampler, UniformNegativeSampler

    if args.threads:
        torch.set_num_threads(args.threads)
    source = SyntheticGraphSource() if args.path == "synthetic" else SplitFolderSource(dataset="gowalla", path=args.path)
    splits = source.build()
    train, test = splits.csr("train"), splits.csr("test")
    info = DatasetInfo(splits.num_users, splits.num_items, train)
    device = args.device
    where = device if device != "cpu" else f"{torch.get_num_threads()} threads"
    note = f"{splits.num_users:,} users, {splits.num_items:,} items, {train.nnz:,} train edges; {where}"
    rows = [Row("build normalised adjacency (CSR + transpose)", _time(lambda: LightGCNEncoder.build_adjacency(train), args.repeat), None, note)]

    sampler = UniformNegativeSampler().bind(train)
    epoch = BPREpochSampler(train, sampler, args.batch_size, seed=0)
    t = _time(lambda: sum(1 for _ in epoch), args.repeat)
    rows.append(Row("draw one BPR epoch (all batches, negatives rejected)", t, None, f"{len(epoch)} batches of {args.batch_size}"))

    def model_for(layers: int) -> GraphRecommender:
        return GraphRecommender(
            info, encoder=functools.partial(LightGCNEncoder), optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
            embedding_dim=args.embedding_dim, num_layers=layers,
        ).to(device)

    batch = {key: value.to(device) for key, value in next(iter(epoch)).items()}
    for layers in sorted({0, args.num_layers}):
        model = model_for(layers)
        model.log = lambda *a, **k: None  # outside a Trainer
        opt = model.configure_optimizers()

        def step(model: GraphRecommender = model, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad()
            model.training_step(batch, 0).backward()
            opt.step()

        step()
        t = _time(step, args.repeat, device)
        name = "MF (0 layers)" if layers == 0 else f"LightGCN ({layers} layers)"
        rows.append(Row(f"training step {name}, d={args.embedding_dim}", t, None, f"≈ {t * len(epoch):.1f} s per epoch"))

    # the custom autograd (prebuilt CSR transpose) vs torch's built-in sparse backward
    adj = LightGCNEncoder.build_adjacency(train).to(device)
    x = torch.randn(adj.size, args.embedding_dim, device=device, requires_grad=True)

    def custom() -> None:
        (adj @ x).sum().backward()

    coo = adj.matrix.to_sparse_coo().coalesce()

    def builtin() -> None:
        torch.sparse.mm(coo, x).sum().backward()

    rows.append(Row("one propagation fwd+bwd, custom CSR autograd", _time(custom, args.repeat, device), None))
    rows.append(Row("one propagation fwd+bwd, torch.sparse.mm (COO) autograd", _time(builtin, args.repeat, device), None))

    model = model_for(args.num_layers).eval()
    metric = TopKMetrics((20,))
    metric = metric.to(device)
    evalset = RankingEvalSet(train, test, 1024)

    def evaluate() -> None:  # batches built and moved as the DataLoader + Lightning would
        with torch.no_grad():
            model.prepare_scoring()
            for i in range(len(evalset)):
                model.evaluate_batch({key: value.to(device) for key, value in evalset[i].items()}, metric)
            metric.compute()
            metric.reset()

    t = _time(evaluate, args.repeat, device)
    rows.append(Row("full-ranking test evaluation, all test users", t, None,
                    f"{evalset.users.numel():,} users × {splits.num_items:,} items, chunks of 1024"))
    return rows


def _session_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", default="synthetic",
                   help="'synthetic' (embedded default, B=64) or a folder of RSC15 prepared files (train_full → test, B=32)")
    p.add_argument("--steps", type=int, default=300, help="timed training steps")
    p.add_argument("--n-sample", type=int, default=2048, help="extra shared negatives")
    p.add_argument("--device", default="cpu")


@section("session-gru4rec", "GRU4Rec: epoch planning, training steps/s, next-item evaluation events/s", _session_args)
def bench_session(args: argparse.Namespace) -> list[Row]:
    """Without Lightning (its per-step overhead comes on top; compare a run's ``fit_seconds``)."""
    from functools import partial

    import torch

    from recsys.data.session_batches import plan_session_parallel
    from recsys.data.session_datamodule import SessionDataModule
    from recsys.data.sources.session_files import PreparedSessionSource
    from recsys.data.sources.session_synthetic import SyntheticSessionSource
    from recsys.models.components.gru4rec import AdagradM
    from recsys.models.session_module import GRU4Rec
    from recsys.sampling import InBatchNegativeSampler

    synthetic = args.path == "synthetic"
    source = SyntheticSessionSource(seed=0) if synthetic else PreparedSessionSource(path=args.path)
    batch_size, device = (64 if synthetic else 32), args.device
    dm = SessionDataModule(source, batch_size=batch_size, eval_batch_size=512, validate_on_test=True,
                           negative_sampler=InBatchNegativeSampler(n_sample=args.n_sample, alpha=0.5))
    dm.setup()
    splits = dm.splits
    note = (f"{splits.num_items:,} items, {splits.train.num_events:,} train events, B={batch_size}, "
            f"n_sample={args.n_sample}, {torch.get_num_threads()} threads, {device}")
    rows = [Row("plan one epoch of session-parallel steps", _time(lambda: plan_session_parallel(splits.train, batch_size), args.repeat), None, note)]

    batches = list(dm.train_dataloader())
    torch.manual_seed(0)
    model = GRU4Rec(dm.info, partial(AdagradM, lr=0.05), sample_store_size=args.n_sample * (args.steps + 50)).to(device)
    opt = model.configure_optimizers()
    model.on_train_start()
    model.on_train_epoch_start()
    model.next_negatives()  # fill the sample store outside the timing

    def train(n: int, offset: int = 0) -> None:
        for k in range(n):
            b = {key: v.to(device) for key, v in batches[(offset + k) % len(batches)].items()}
            loss = model.training_step(b, k)
            opt.zero_grad()
            loss.backward()
            opt.step()

    train(20)
    t = _time(lambda: train(args.steps, 20), args.repeat, device)
    rows.append(Row(f"{args.steps} training steps (forward + backward + Adagrad)", t, None,
                    f"{args.steps / t:.0f} steps/s, {args.steps * batch_size / t:,.0f} events/s; {len(batches)} steps per epoch"))

    test_batches = [{k: v.to(device) for k, v in b.items()} for b in dm.test_dataloader()]
    model.eval()

    def evaluate() -> None:
        model.on_test_epoch_start()
        with torch.no_grad():
            for b in test_batches:
                model.evaluate_batch(b, model.test_metrics)
        model.test_metrics.reset()

    t = _time(evaluate, args.repeat, device)
    rows.append(Row("next-item test evaluation (rank over all items)", t, None,
                    f"{splits.test.num_steps:,} events, {splits.test.num_steps / t:,.0f} events/s"))
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
    import functools

    import numpy as np
    import pandas as pd
    import torch

    from recsys.api import Run, load_run
    from recsys.data.graph_datamodule import GraphDataModule
    from recsys.data.sources.split_folder import SplitFolderSource
    from recsys.data.sources.synthetic import SyntheticGraphSource
    from recsys.export import FaissRetriever, export_embeddings
    from recsys.models.components.lightgcn import LightGCNEncoder
    from recsys.models.graph_module import GraphRecommender

    if args.ckpt:
        run = load_run(args.ckpt)
    else:
        source = (SyntheticGraphSource() if args.path == "synthetic"
                  else SplitFolderSource(dataset="gowalla", path=args.path))
        dm = GraphDataModule(source, validate_on_test=True)
        dm.setup()
        torch.manual_seed(0)
        model = GraphRecommender(dm.info, encoder=functools.partial(LightGCNEncoder),
                                 optimizer=functools.partial(torch.optim.Adam), embedding_dim=64, num_layers=3)
        run = Run(None, dm, model)
    k, users = args.k, np.arange(run.num_users)
    note = f"{run.num_users:,} users × {run.num_items:,} items, k={k}, {torch.get_num_threads()} threads"
    results: dict[str, pd.DataFrame] = {}

    def exact() -> None:
        run._prepared = False  # propagate again, as a fresh process would
        results["exact"] = pd.concat(list(run.iter_recommend_all(k, chunk_size=args.chunk_size)), ignore_index=True)

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
    sys.path.insert(0, str(ROOT / "src"))
    rows = SECTIONS[args.section][1](args)
    import numpy

    print(f"## {args.section}  (python {platform.python_version()}, numpy {numpy.__version__}, "
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
