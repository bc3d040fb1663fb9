#!/usr/bin/env bash
# SevenNet-0 pre-training labels for the default model on the 4x4 cell (the cell of the DFT labels):
# each metal with 6Na and 4 of the 20 screening motifs (rotated so every motif meets ~5 metals), all H*
# sites, 1 rattle, 3 H-scan copies per H* state, 2 reference FIRE frames, and the H2 / pocket / bulk
# references. One label store (runs/d2/labels.db), so a re-run resumes. One core.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
mkdir -p runs/d2
motifs=(2Na 2Nb 2Nc 2Nd 2Ne 2Nf 3Na 3Nb 3Nc 3Nd 3Ne 3Nf 4Na 4Nb 4Nc 4Nd 4Ne 4Nf 5Na 5Nb)
metals=(Ti V Cr Mn Fe Co Ni Cu Zr Nb Mo Ru Rh Pd Ag Hf Ta W Re Os Ir Pt Au)
for i in "${!metals[@]}"; do
  m=${metals[$i]}
  sel="6Na"
  for j in 0 5 10 15; do sel="$sel,${motifs[$(( (i * 3 + j) % 20 ))]}"; done
  [ -s "runs/d2/$m.extxyz" ] && continue
  echo "=== $m $sel $(date -Is)"
  screen data --metals "$m" --motifs "$sel" --supercell 4x4 --reference sevenn --n-rattle 1 --strain 0 \
    --relax-frames 2 --db runs/d2/labels.db --out "runs/d2/$m.extxyz" --seed "$i" --no-progress
done
echo "=== done $(date -Is)"
