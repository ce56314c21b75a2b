#!/usr/bin/env bash
# The first checks to run on a CUDA machine (about 5 minutes on one GPU): training and evaluation on the GPU
# through every entry point users type, metrics of a GPU-trained checkpoint re-evaluated on the CPU, and the
# GPU timings for docs/benchmarks.md. Logs, metrics and timings go to $OUT (default logs/gpu_check).
#
#   bash scripts/gpu_check.sh                 # with the project installed (make train / pip install -e .)
#
# On a machine that has torch + CUDA but not the project's other packages and no network: download the
# missing pure-Python wheels first on a machine with network, into .whl/ (git-ignored), e.g.
#   pip download --no-deps -d .whl hydra-core==1.3.8 omegaconf==2.3.0 && pip wheel --no-deps -w .whl \
#     antlr4-python3-runtime==4.9.3
# then run:  RECSYS_WHEELS=.whl bash scripts/gpu_check.sh
# For Gowalla timings, copy the split folder next to it and pass GOWALLA=<folder> (default: synthetic only).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-logs/gpu_check}
mkdir -p "$out"
py=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && py=.venv/bin/python
if [ -n "${RECSYS_WHEELS:-}" ]; then
    $py -m pip install -q --no-index --no-deps --target /tmp/recsys_site "$RECSYS_WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/recsys_site:src
else
    export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
fi
export WANDB_MODE=disabled HYDRA_FULL_ERROR=1 PYTHONUNBUFFERED=1
quiet=(extras.print_config=false trainer.enable_progress_bar=false "~callbacks.progress_bar")
status=0

step() {  # step <name> <command...>: run, log to $out/<name>.log, record pass/fail
    local name=$1
    shift
    local start=$SECONDS
    if "$@" >"$out/$name.log" 2>&1; then
        echo "PASS $name ($((SECONDS - start)) s)" | tee -a "$out/summary.txt"
    else
        echo "FAIL $name ($((SECONDS - start)) s): tail of $out/$name.log" | tee -a "$out/summary.txt"
        tail -20 "$out/$name.log"
        status=1
    fi
}

: >"$out/summary.txt"
$py -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0), torch.cuda.device_count(), 'GPU(s)')" \
    | tee -a "$out/summary.txt" || { echo "no CUDA device visible to $py" | tee -a "$out/summary.txt"; exit 1; }

# 1. the exact command of the brief, on one GPU; then its checkpoint evaluated on the GPU and on the CPU
step gpus1 $py train.py model=ngcf trainer.gpus=1 trainer.max_epochs=3 trainer.check_val_every_n_epoch=1 \
    hydra.run.dir="$out/gpus1" "${quiet[@]}"
for where in gpu cpu; do
    step "eval_$where" $py eval.py ckpt_path="$out/gpus1/checkpoints/last.ckpt" trainer=$where \
        hydra.run.dir="$out/eval_$where" extras.print_config=false trainer.enable_progress_bar=false
done
# 2. trainer=ddp on every visible GPU (a 1-GPU machine runs it as a 1-process group over nccl)
step ddp $py train.py trainer=ddp trainer.max_epochs=2 trainer.check_val_every_n_epoch=1 \
    hydra.run.dir="$out/ddp" "${quiet[@]}"
# 3. a multirun of DDP jobs on the GPU
step multirun_ddp $py train.py -m trainer=ddp model.num_layers=1,2 trainer.max_epochs=1 \
    hydra.sweep.dir="$out/multirun_ddp" "${quiet[@]}"
# 4. GRU4Rec on the GPU
step gru4rec $py train.py model=gru4rec trainer=gpu trainer.max_epochs=2 trainer.check_val_every_n_epoch=1 \
    hydra.run.dir="$out/gru4rec" "${quiet[@]}"
# 5. the tests that need a device (BPR epochs drawn on the GPU, …)
step gpu_tests $py -m pytest -q -m gpu tests/unit/test_gpu.py
# 6. timings
step bench_graph_synthetic $py scripts/benchmark.py graph-train-eval --path synthetic --device cuda
step bench_session_synthetic $py scripts/benchmark.py session-gru4rec --device cuda
if [ -n "${GOWALLA:-}" ]; then
    step bench_graph_gowalla $py scripts/benchmark.py graph-train-eval --path "$GOWALLA" --device cuda
fi

# the same checkpoint evaluated on the GPU and on the CPU: the metrics agree up to float rounding
$py - "$out" <<'EOF' | tee -a "$out/summary.txt" || status=1
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
gpu, cpu = (json.loads((out / f"eval_{w}" / "metrics.json").read_text()) for w in ("gpu", "cpu"))
keys = sorted(k for k in cpu if k.startswith("test/"))
diff = max(abs(gpu[k] - cpu[k]) for k in keys)
print(f"{'PASS' if diff <= 1e-3 else 'FAIL'} eval gpu vs cpu: max |difference| {diff:.2e} over {len(keys)} test metrics;",
      "recall@20", round(gpu["test/recall@20"], 4), "vs", round(cpu["test/recall@20"], 4))
sys.exit(diff > 1e-3)
EOF
exit $status
