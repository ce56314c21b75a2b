"""Speed of the session path (issue 6): batch planning, GRU4Rec training steps/s, evaluation events/s.

    OMP_NUM_THREADS=1 python scripts/benchmark_sessions.py                      # embedded default
    OMP_NUM_THREADS=1 python scripts/benchmark_sessions.py --rsc15 ../shared/datasets/rsc15_100k

Times the pieces without Lightning (its per-step overhead comes on top; compare ``fit_seconds`` of a run).
Never asserted in tests.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from recsys.data.session_batches import plan_session_parallel
from recsys.data.session_datamodule import SessionDataModule
from recsys.data.sources.session_files import PreparedSessionSource
from recsys.data.sources.session_synthetic import SyntheticSessionSource
from recsys.models.components.gru4rec import AdagradM
from recsys.models.session_module import GRU4Rec
from recsys.sampling import InBatchNegativeSampler


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench(name: str, source, batch_size: int, n_sample: int, steps: int, device: str) -> None:
    dm = SessionDataModule(source, batch_size=batch_size, eval_batch_size=512,
                           negative_sampler=InBatchNegativeSampler(n_sample=n_sample, alpha=0.5),
                           validate_on_test=True)
    dm.setup()
    s = dm.splits
    plan_s = best_of(lambda: plan_session_parallel(s.train, batch_size))
    batches = list(dm.train_dataloader())
    torch.manual_seed(0)
    model = GRU4Rec(dm.info, partial(AdagradM, lr=0.05), sample_store_size=n_sample * (steps + 50)).to(device)
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
        if device == "cuda":
            torch.cuda.synchronize()

    train(20)
    train_s = best_of(lambda: train(steps, 20), repeat=2)
    test_batches = [{k: v.to(device) for k, v in b.items()} for b in dm.test_dataloader()]
    model.eval()

    def evaluate() -> None:
        model.on_test_epoch_start()
        with torch.no_grad():
            for b in test_batches:
                model.evaluate_batch(b, model.test_metrics)
        model.test_metrics.reset()

    eval_s = best_of(evaluate)
    print(f"{name}: {s.num_items} items, {s.train.num_events} train events, B={batch_size}, n_sample={n_sample}, "
          f"threads={torch.get_num_threads()}, device={device}")
    print(f"  plan the epoch ({len(batches)} steps): {plan_s * 1000:.1f} ms")
    print(f"  training step (forward+backward+AdagradM, sparse={model.net.sparse}): "
          f"{steps / train_s:.0f} steps/s, {steps * batch_size / train_s:.0f} events/s")
    print(f"  evaluation ({s.test.num_steps} next-item ranks over {s.num_items} items): "
          f"{s.test.num_steps / eval_s:.0f} events/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rsc15", help="folder of the RSC15 prepared files (train_full -> test)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    bench("synthetic_sessions", SyntheticSessionSource(seed=0), 64, 2048, args.steps, args.device)
    if args.rsc15:
        bench("rsc15_100k", PreparedSessionSource(path=args.rsc15), 32, 2048, args.steps, args.device)


if __name__ == "__main__":
    main()
