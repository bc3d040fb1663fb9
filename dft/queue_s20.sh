#!/usr/bin/env bash
# DFT queue of session 20 (GPAW PW PBE 500 eV, 3x3x1 k, spin-polarised): after dft/queue_s17.sh has finished
# Cu2@4Nb (the second Cu host, for the transfer test of docs/dft.md), label Ir2@2Nd's best N site and best C
# site (`--site-classes N,C`). Its metal site (H on top of Ir) is DFT +1.23 eV against v0.5.1's -0.69 eV; with
# no N or C site labelled, that DFT value is only an upper bound of the host's ΔGH* (a minimum over sites), so
# the 1.9 eV error in the model card may be partly a missing site. Host single point reused; two H* points,
# one per worker. Then queue_s17.sh resumes with its remaining hosts. Finished single points are skipped.
# Start:  cd /work/main && nohup setsid bash dft/queue_s20.sh >> runs/queue_s20.log 2>&1 &
#         (with queue_s17.sh already running; without it, the wait is skipped)
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
. dft/queue_common.sh
after_queue_s17 Cu2@4Nb
screen validate --engine gpaw --preset pw500 --labels dft/labels.db --no-progress --db runs/screen6/results.db \
  --model-hash mf1f0d8beecbfac41 --workers 2 --site-classes N,C --select id:Ir2@2Nd
bash dft/queue_s17.sh
