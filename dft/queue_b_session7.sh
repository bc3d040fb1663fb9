#!/usr/bin/env bash
# Session 7, second core: the pw600 cutoff check on a second host (Pt2@5Na, a training host whose pw500 labels
# exist; issue 10 asks for the settings check on two or three hosts), then queue B's training hosts at pw500.
# Start:  cd /work/main && nohup setsid bash dft/queue_b_session7.sh >> runs/validate_queue.log 2>&1 &
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
V="screen validate --db runs/screen4/results.db --engine gpaw --workers 1 --labels dft/labels.db --no-progress"
$V --preset pw600 --select id:Pt2@5Na > runs/val_b600.log 2>&1
$V --preset pw500 --max 12 --select id:Mo2@2Ne,Ag2@5Na,Nb2@4Nf,Rh2@5Na,Cu2@5Nb,V2@4Na,W2@2Na,Hf2@2Na,Ni2@3Ne > runs/val_b.log 2>&1
