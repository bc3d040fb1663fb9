#!/usr/bin/env bash
# GPU session 22 (one H100/H200 through the workplace's device tool, 15 min of device time), exactly as run:
#   1. the full screen (460 hosts, every H* site) of the shipped default model on the GPU, measured rather than
#      extrapolated (issue 8): `screen run --metals all --motifs all --device cuda`, wall time, GPU memory
#      sampled each second, and the per-host results (ΔGH*, σ, E_f, flags, energies) as CSV, to compare with
#      the CPU screen of the same model (runs/screen6, `benchmarks/gpu_screen_compare.py`);
#   2. tests/test_graph_step.py on CUDA (its CUDA test skips on every CPU, CI included);
#   3. benchmarks/gpu_check.py: CPU == GPU outputs in float64, GPU training resumed on the CPU, relaxation.
# Inputs in .gpu/ (git-ignored, carried): whl/ (ase 3.29.0, e3nn 0.6.0, vesin-torch 0.6.2 for Python 3.12).
# Outputs in $OUT: screen.log, gpumem.csv, screen_hosts.csv, tests.log, check.log, gpu.txt.
# Knobs for a CPU dry run: DEV=cpu LIMIT=2 SCREEN_TIMEOUT=... (LIMIT passes --limit to screen run).
source "$(dirname "$0")/gpu_common.sh"
stamp install
if [ -d .gpu/whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
DEV=${DEV:-cuda}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch, e3nn, ase; print('torch', torch.__version__, 'e3nn', e3nn.__version__, 'ase', ase.__version__)" \
  | tee -a "$OUT/gpu.txt"

stamp screen
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -l 1 >"$OUT/gpumem.csv" 2>/dev/null &
smi=$!
limit=()
[ -n "${LIMIT:-}" ] && limit=(--limit "$LIMIT")
s0=$(date +%s.%N)
timeout "${SCREEN_TIMEOUT:-270}" python3 cli.py run --metals all --motifs all --device "$DEV" --batch-size 512 \
  --db .gpu/screen.db --no-progress "${limit[@]}" >"$OUT/screen.log" 2>&1
rc=$?
s1=$(date +%s.%N)
kill "$smi" 2>/dev/null
echo "screen rc $rc wall_s $(python3 -c "print(round($s1 - $s0, 1))")" | tee -a "$OUT/screen.log"
tail -25 "$OUT/screen.log"
python3 - "$OUT/screen_hosts.csv" <<'PY'
import sys

from ase.db import connect

from screening.store import load_results

df = load_results(".gpu/screen.db")
df.drop(columns=[c for c in df.columns if df[c].dtype == object and c not in ("host", "best_site", "flags", "model_hash")]).to_csv(sys.argv[1], index=False)
with connect(".gpu/screen.db") as db:
    print("rows in store:", db.count(), "ΔG rows:", len(df))
PY

stamp tests
timeout "${TEST_TIMEOUT:-120}" python3 -m pytest -q -p no:cacheprovider tests/test_graph_step.py 2>&1 | tail -15 \
  | tee "$OUT/tests.log"

stamp check
timeout "${CHECK_TIMEOUT:-90}" python3 benchmarks/gpu_check.py --device "$DEV" 2>&1 \
  | grep -v "^ \+[0-9]\|^rank\|^database\|^$" | tee "$OUT/check.log"
stamp done
