#!/usr/bin/env bash
# v0.4 data: SevenNet-0 labels for EVERY remaining (metal, motif) host of the screen on the 4x4 cell, with the
# settings of build_default_data.sh. Left out: the hosts already labelled there (6Na + 4 rotated motifs per
# metal) and the 24 held-out hosts of `screen bench heldout` (12 calibration + 12 test hosts), so both
# held-out sets stay unseen. Two processes (metals split odd/even), one core each; resumable per metal.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
mkdir -p runs/d4
HELDOUT=" Re2@3Nc Fe2@3Nd Ir2@2Nb Mo2@2Nc Ru2@2Nf Cr2@2Nd Pt2@4Nd Ni2@4Na Os2@4Ne Mn2@3Ne Au2@5Na Zr2@4Nf \
V2@4Ne Rh2@2Nd Pt2@2Nf Ta2@2Nc Cu2@4Na Ir2@5Nb Au2@2Ne Hf2@3Nd W2@4Nc Cr2@5Na Ru2@3Na Mo2@3Nf "
motifs=(2Na 2Nb 2Nc 2Nd 2Ne 2Nf 3Na 3Nb 3Nc 3Nd 3Ne 3Nf 4Na 4Nb 4Nc 4Nd 4Ne 4Nf 5Na 5Nb)
metals=(Ti V Cr Mn Fe Co Ni Cu Zr Nb Mo Ru Rh Pd Ag Hf Ta W Re Os Ir Pt Au)
part=${1:-all}   # 0, 1 or all
for i in "${!metals[@]}"; do
  [ "$part" != all ] && [ $(( i % 2 )) != "$part" ] && continue
  m=${metals[$i]}
  done_v2=" "
  for j in 0 5 10 15; do done_v2="$done_v2${motifs[$(( (i * 3 + j) % 20 ))]} "; done
  sel=""
  for mo in "${motifs[@]}"; do
    [[ "$done_v2" == *" $mo "* ]] && continue
    [[ "$HELDOUT" == *" $m""2@$mo "* ]] && continue
    sel="$sel,$mo"
  done
  sel=${sel#,}
  [ -s "runs/d4/$m.extxyz" ] && continue
  echo "=== $m $sel $(date -Is)"
  screen data --metals "$m" --motifs "$sel" --supercell 4x4 --reference sevenn --n-rattle 1 --strain 0 \
    --relax-frames 2 --db "runs/d4/labels_$m.db" --out "runs/d4/$m.extxyz" --seed "$(( i + 100 ))" --no-progress
done
echo "=== done $(date -Is)"
