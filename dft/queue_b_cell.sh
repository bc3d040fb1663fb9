#!/usr/bin/env bash
# Session 7, second core: the cell-size check of issue 10 (ΔE_H of Cu2@4Na, H on top_X0, builder geometry,
# 4x4 against 5x5 cell at pw500; ~4 core-hours: the 4x4 triple, then the 5x5 host and host+H), resumable.
# Start:  cd /work/main && nohup setsid bash dft/queue_b_cell.sh >> runs/validate_queue.log 2>&1 &
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
screen bench dft --compute --db dft/labels.db --base pw500 --tight pw500 --supercell 4x4 --tight-supercell 5x5 \
  --hosts Cu --motifs 4Na --site top_X0 --section dft_cell > runs/val_cell.log 2>&1
