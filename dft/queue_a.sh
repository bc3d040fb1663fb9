#!/usr/bin/env bash
# Core 1 alone: the training hosts of dft/validate_queue.sh (finished labels are skipped; a single point
# killed mid-SCF continues from its checkpoint). Start: nohup setsid bash dft/queue_a.sh >> runs/validate_queue.log 2>&1 &
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
screen validate --db runs/screen4/results.db --engine gpaw --preset pw500 --workers 1 --labels dft/labels.db \
  --no-progress --max 12 --select id:Pd2@5Na,Ta2@4Na,Cr2@5Nb,Zr2@5Nb,Ti2@5Na > runs/val_a.log 2>&1
