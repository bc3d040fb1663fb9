#!/usr/bin/env bash
# DFT queue of session 24 (GPAW PW PBE 500 eV, 3x3x1 k, spin-polarised), into runs/screen7 (v0.5.1's ΔG rows,
# settings sac5fe908216b3a49) like dft/queue_s23.sh:
# 1. the held-out *calibration* hosts of benchmarks/heldout_hosts.txt (queue_s23's first command; if it is still
#    running, this waits for it instead of starting a second copy), so that benchmarks/sigma_calibration.py
#    decides the σ factor on all 12;
# 2. then, instead of more DFT *training* hosts (docs/dft.md: the fine-tunings' held-out gain has shrunk to
#    zero with 32 of them), the top of v0.5.1's own ranking (|ΔGH*| smallest first, its best site only),
#    leaving out the 16 hosts v0.5.1 was trained on: what a user sends to DFT first, and the measurement of
#    how many of the screen's best candidates DFT confirms (already labelled ones are reused at no cost).
# Labels go to dft/labels.db; finished single points are skipped, an interrupted one continues from its SCF
# checkpoint in dft/logs.
# Start:  cd /work/main && nohup setsid bash dft/queue_s24.sh >> runs/queue_s24.log 2>&1 &
# Stop:   pkill -f queue_s24.sh; pkill -TERM -f "screen validate"
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
STORE="--db runs/screen7/results.db --model-hash mf1f0d8beecbfac41 --settings-hash sac5fe908216b3a49"
CAL=V2@4Ne,Rh2@2Nd,Pt2@2Nf,Ta2@2Nc,Ir2@5Nb,Au2@2Ne,Hf2@3Nd,W2@4Nc,Cr2@5Na,Ru2@3Na,Mo2@3Nf
if pgrep -f "id:$CAL" > /dev/null; then
  echo "$(date -u +%H:%M) waiting for the running calibration-host validate"
  while pgrep -f "id:$CAL" > /dev/null; do sleep 30; done
else
  screen validate --engine gpaw --preset pw500 --labels dft/labels.db --no-progress $STORE \
    --workers 2 --site-classes metal --select "id:$CAL"
fi
V051_TRAIN=Ag2@5Na,Au2@4Nf,Co2@5Nb,Cr2@5Nb,Fe2@2Ne,Ir2@4Nc,Mn2@2Na,Mo2@2Ne,Os2@3Ne,Pd2@5Na,Pt2@5Na,Re2@5Nb,Ru2@5Na,Ta2@4Na,Ti2@5Na,Zr2@5Nb
screen validate --engine gpaw --preset pw500 --labels dft/labels.db --no-progress $STORE \
  --workers 2 --exclude-hosts "$V051_TRAIN" --select top:12 --max 12
