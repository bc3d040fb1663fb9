#!/usr/bin/env bash
# GPU session 5 (one H100 through the workplace's device tool, 15 min of device time), exactly as run:
#   1. benchmarks/gpu_graph_train.py: the RACE `large` preset on acac, training step captured in one CUDA
#      graph (eager vs graph step time at batch 5 and 32), then 2.5 min of training with the captured step
#      and the acac test errors;
#   2. benchmarks/mace_acac.py: MACE (mace-torch 0.3.16, carried as wheels into its own folder because it
#      pins e3nn 0.4.4) trained for the same 2.5 min on the same GPU, and its acac test errors.
# Inputs in .gpu/ (git-ignored): acac/ (a copy of ../shared/data/botnet/acac), whl/ (ase, e3nn 0.6,
# vesin-torch for Python 3.12), macewhl/ (mace-torch and the dependencies the GPU image lacks).
# Part 1 found that capture fails (a host-to-device copy inside torch.linalg.matrix_exp on CUDA); part 2
# (PART=2), after the covariance head switched to the branch-free expm_sym3, repeats step 1 at batch 32.
# Outputs in $OUT: graph_train.json/.log, potential_mace_cuda.json, mace.log.
source "$(dirname "$0")/gpu_common.sh"
stamp install
pipi() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$@"; }
pipi /tmp/site .gpu/whl/*.whl || exit 1
pipi /tmp/mace_site .gpu/macewhl/*.whl || echo "mace wheels did not install"
export PYTHONPATH=/tmp/site
printf '#!/bin/sh\nPYTHONPATH=/tmp/mace_site exec python3 "$@"\n' >/tmp/macepy
chmod +x /tmp/macepy
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
if [ "${PART:-1}" = 2 ]; then
  stamp graph2
  timeout "${GRAPH_TIMEOUT:-270}" python3 benchmarks/gpu_graph_train.py --data-dir .gpu/acac --batch-sizes 5,32 \
    --batch-size 32 --minutes "${GRAPH_MINUTES:-2.0}" --out "$OUT/graph_train2.json" 2>&1 | tail -40 | tee "$OUT/graph_train2.log"
  stamp done
  exit 0
fi
stamp graph
timeout "${GRAPH_TIMEOUT:-290}" python3 benchmarks/gpu_graph_train.py --data-dir .gpu/acac --batch-sizes 5,32 \
  --batch-size 5 --minutes "${GRAPH_MINUTES:-2.5}" --out "$OUT/graph_train.json" 2>&1 | tail -40 | tee "$OUT/graph_train.log"
stamp mace
timeout "${MACE_TIMEOUT:-260}" python3 benchmarks/mace_acac.py --mace-python /tmp/macepy --device cuda \
  --threads 4 --minutes "${MACE_MINUTES:-2.5}" --hidden-irreps "32x0e + 32x1o" --data-dir .gpu/acac \
  --work-dir .gpu/mace --race-json "$OUT/graph_train.json" 2>&1 | grep -v Warning | tail -15 | tee "$OUT/mace.log"
cp benchmarks/results/potential_mace_cuda.json "$OUT/" 2>/dev/null
tail -30 .gpu/mace/train_stdout.log >"$OUT/mace_train_tail.log" 2>/dev/null
stamp done
