#!/usr/bin/env bash
# DFT queue of session 24, second part (GPAW PW PBE 500 eV, 3x3x1 k, spin-polarised): v0.6-dft (build step 21)
# is the shipped default since session 24, so DFT goes to the top of *its* full screen (runs/screen8, settings
# sac5fe908216b3a49), at its own relaxed geometries and best sites, leaving out the 32 hosts it was trained on:
# the validations `screen report` shows for the shipped model, and the check of how many of its best
# candidates DFT confirms. (dft/queue_s24.sh had started on v0.5.1's ranking; this stops it once its first
# host, Ni2@2Ne, is written, and takes over.) Labels go to dft/labels.db; finished single points are skipped,
# an interrupted one continues from its SCF checkpoint in dft/logs.
# runs/screen8 is made by `screen run --metals all --motifs all --db runs/screen8/results.db` with the default
# model (19 min on a core shared with two GPAW workers).
# Start:  cd /work/main && nohup setsid bash dft/queue_s24b.sh >> runs/queue_s24b.log 2>&1 &
# Stop:   pkill -f queue_s24b.sh; pkill -TERM -f "screen validate"
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
if pgrep -f queue_s24.sh > /dev/null; then
  until grep -q "done: Ni2@2Ne" runs/queue_s24.log; do sleep 30; done
  pkill -f queue_s24.sh; pkill -TERM -f "screen validate"
  while pgrep -f "screen validate" > /dev/null; do sleep 10; done
  echo "$(date -u +%H:%M) stopped dft/queue_s24.sh after Ni2@2Ne"
fi
V06_TRAIN=Ag2@2Nd,Ag2@5Na,Au2@2Nd,Au2@4Nf,Co2@2Nf,Co2@5Nb,Cr2@3Nf,Cr2@5Nb,Cu2@4Nb,Fe2@2Nd,Fe2@2Ne,Hf2@4Nf,Ir2@2Nd,Ir2@4Nc,Mn2@2Na,Mo2@2Nd,Mo2@2Ne,Nb2@2Nb,Nb2@2Nf,Ni2@2Nd,Os2@3Ne,Pd2@5Na,Pt2@5Na,Re2@5Nb,Rh2@4Ne,Ru2@2Nd,Ru2@5Na,Ta2@4Na,Ti2@5Na,V2@3Na,W2@2Nf,Zr2@5Nb
screen validate --engine gpaw --preset pw500 --labels dft/labels.db --no-progress \
  --db runs/screen8/results.db --model-hash m59dbb364553297a7 --settings-hash sac5fe908216b3a49 \
  --workers 2 --exclude-hosts "$V06_TRAIN" --select top:12 --max 12
