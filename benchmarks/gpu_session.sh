#!/usr/bin/env bash
# One GPU session (H100/H200 through the workplace's device tool, ~10 min of compute), exactly as run:
#   1. benchmarks/gpu_check.py: CPU == GPU outputs (float64), train on the GPU + resume on the CPU, relax;
#   2. the v0.4 fine-tune of the default model on all SevenNet-0 data (v0.3 data + every remaining host,
#      benchmarks/build_default_data_v4.sh), from the v0.3 point model, batch 32, beta-NLL 0.5;
#   3. the RACE `large` preset on acac for the minute that is left (bench potential: seconds per epoch and
#      the errors it reaches, its own section), and
#   4. the batched-relaxation throughput of `screen run` on the GPU (bench screen, its own section).
# Inputs in .gpu/ (git-ignored, prepared on the dev machine): train_v4.extxyz.xz, valid.extxyz.xz, init.pt,
# acac/ (a copy of ../shared/data/botnet/acac, which does not travel).
# Outputs in $OUT (the device tool brings them back): logs, best.pt / last.pt / history.json, screen_cuda.json.
# The Laplace fit, ΔGH* recalibration and held-out tests then run on the CPU (build_default_model.sh).
source "$(dirname "$0")/gpu_common.sh"
stamp check
python3 benchmarks/gpu_check.py --device "${DEV:-cuda}" 2>&1 | grep -v "^ \+[0-9]\|^rank\|^database\|^$" | tee "$OUT/check.log"
stamp data
for f in .gpu/*.xz; do xz -d -k -f -T0 "$f"; done
stamp train
timeout "${TRAIN_TIMEOUT:-330}" python3 cli.py train --data .gpu/train_v4.extxyz --valid .gpu/valid.extxyz \
  --preset fast --init-from .gpu/init.pt --repulsion zbl --max-force 25 --lr 3e-3 --batch-size 32 \
  --mse-warmup 0 --beta-nll 0.5 --epochs 60 --max-minutes "${TRAIN_MINUTES:-4.3}" --device "${DEV:-cuda}" \
  --out .gpu/model --quiet 2>&1 | tail -20 | tee "$OUT/train.log"
cp .gpu/model/best.pt .gpu/model/history.json "$OUT/" 2>/dev/null
python3 - <<'EOF' | tee -a "$OUT/train.log"
import json
h = json.load(open(".gpu/model/history.json"))
for r in h:
    print(f"epoch {r['epoch']:3d} train {r['train_loss']:.4g} valid {r['valid_loss']:.4g} "
          f"E {1e3 * r['energy_mae']:.1f} meV F {1e3 * r['forces_mae']:.1f} meV/A lr {r['lr']:.2g}")
EOF
stamp acac
timeout "${ACAC_TIMEOUT:-110}" python3 cli.py bench potential --preset large --device "${DEV:-cuda}" --epochs 2000 \
  --mse-warmup 2000 --max-minutes "${ACAC_MINUTES:-1.3}" --data-dir .gpu/acac --work-dir .gpu/acac_run \
  --no-sevennet 2>&1 | tail -12 | tee "$OUT/acac.log"
cp benchmarks/results/potential_*.json "$OUT/" 2>/dev/null
stamp bench
timeout "${BENCH_TIMEOUT:-90}" python3 cli.py bench screen --device "${DEV:-cuda}" --metals all --motifs 4Na,5Na \
  --limit 46 --batch-size 512 --max-steps 300 --batch-sizes 32,128,512 --scaling-structures 512 \
  --scaling-steps 5 --sevenn 0 --root .gpu/bench 2>&1 | tail -30 | tee "$OUT/bench.log"
cp .gpu/bench/benchmarks/results/screen*.json "$OUT/" 2>/dev/null
stamp done
