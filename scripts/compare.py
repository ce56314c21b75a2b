"""Compare configurations over seeds with confidence intervals and paired significance tests.

    python scripts/compare.py logs/train/multiruns/2026-01-01_12-00-00            # a seeds sweep
    python scripts/compare.py logs/train/runs/a logs/train/runs/b --out results/ab  # run folders
    python scripts/compare.py <sweep> --baseline model=mf --metrics recall@20,ndcg@20 --test wilcoxon

Groups the runs by config (seed left out), then per group and metric: mean, std and 95 % t interval over seeds;
against the baseline group (default: the first): paired t-test and Wilcoxon signed-rank test over the per-user
results (per_user.parquet), mean difference with its CI, Holm-Bonferroni over the table. Writes comparison.md,
comparison.csv and comparison.png into the sweep folder (or --out). Runs of different datasets or splits are
refused (exit code 2, nothing written). See recsys.utils.compare and docs/comparisons.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from recsys.errors import RecsysError
from recsys.utils.compare import TESTS, compare, upload_comparison
from recsys.utils.results import add_upload_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+", help="a multirun folder, or run folders")
    parser.add_argument("--baseline", default=None, help="the baseline group: its name or one of its overrides "
                                                         "(default: the first group)")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated metrics, or 'all' (default: every metric at cut-off 20)")
    parser.add_argument("--test", choices=TESTS, default="t", help="the test that marks ▲/▼ (default: t)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level after Holm (default: 0.05)")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence of the intervals (default: 0.95)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the folder given, or the "
                                                                "run folders' common parent)")
    add_upload_arguments(parser, "the table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    metrics = args.metrics.split(",") if args.metrics else None
    try:
        result = compare(args.folders, args.out, baseline=args.baseline, metrics=metrics, alpha=args.alpha,
                         confidence=args.confidence, test=args.test)
    except RecsysError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.files[0].read_text())
    for path in result.files:
        print(f"wrote {path}")
    run_dir = upload_comparison(args.folders[0], result, args.upload, args.project, args.group)
    if run_dir is not None:
        print(f"wandb run: {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
