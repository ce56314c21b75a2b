"""Draw the training curves (train loss and the monitored validation metric per epoch) of a run or a sweep.

    python scripts/plot_run.py logs/train/runs/2026-01-01_12-00-00            # -> <run>/plots/curves.png
    python scripts/plot_run.py logs/train/multiruns/2026-01-01_12-00-00       # one line per job
    python scripts/plot_run.py <run> --metric val/ndcg@20 --out curves.png

Reads each run's CSV log (<run>/csv/metrics.csv, written by logger=csv or logger=many). The metric defaults
to the run's monitor.metric (.hydra/config.yaml), else val/recall@20. train.py draws the same figure at the
end of every run. See recsys.utils.plots.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsys.errors import RecsysError
from recsys.utils.plots import plot_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a run folder (hydra.run.dir) or a sweep folder (hydra.sweep.dir)")
    parser.add_argument("--metric", default=None, help="validation metric (default: the run's monitor.metric)")
    parser.add_argument("--out", type=Path, default=None, help="output PNG (default: <folder>/plots/curves.png)")
    args = parser.parse_args(argv)
    try:
        path = plot_folder(args.folder, metric=args.metric, out_path=args.out)
    except RecsysError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
