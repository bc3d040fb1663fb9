#!/usr/bin/env bash
# DFT queue of session 16 (GPAW PW PBE 500 eV, 3x3x1 k, spin-polarised): the hosts of dft/queue_s14.sh (one
# host per metal pair with no DFT label before session 14, chosen by v0.5-dft's BALD on runs/screen6; host
# and H* at the model's best site), in ONE process with two label workers, so both cores stay busy until the
# list is done (queue_s14's second chain ran out of hosts after Hf2@4Nf) and no single point runs twice.
# Finished single points are skipped and an interrupted one continues from its SCF checkpoint in dft/logs,
# so the script resumes after a kill; each host is written back into runs/screen6 when its three single
# points are done. Needs runs/screen6/results.db (`screen run --db runs/screen6/results.db` with the
# v0.5-dft network, relaxation hash m976adfb7b2cd0e3c).
# Start:  cd /work/main && nohup setsid bash dft/queue_s16.sh >> runs/queue_s16.log 2>&1 &
# Stop:   pkill -f queue_s16.sh; pkill -TERM -f "screen validate"   (SIGTERM stops the workers and keeps the
#         SCF checkpoints)
# Session 16 itself ran queue_s14.sh and chained Ni2@2Nd behind its second core (`--after-pid PID`).
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
COMMON="screen validate --engine gpaw --preset pw500 --labels dft/labels.db --no-progress --max 12"
V6="$COMMON --db runs/screen6/results.db --model-hash m976adfb7b2cd0e3c --exclude-hosts benchmarks/heldout_hosts.txt"
if [ "$1" = "--after-pid" ]; then
  while kill -0 "$2" 2>/dev/null; do sleep 60; done
  $V6 --workers 1 --select id:Ni2@2Nd >> runs/queue_s16b.log 2>&1
  exit
fi
$V6 --workers 2 --select id:Nb2@2Nf,Hf2@4Nf,W2@2Nf,Rh2@4Ne,Ni2@2Nd >> runs/queue_s16.log 2>&1
