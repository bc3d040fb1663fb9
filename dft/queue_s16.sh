#!/usr/bin/env bash
# DFT queue of session 16: the hosts of dft/queue_s14.sh (GPAW PW PBE 500 eV, 3x3x1 k, spin-polarised; one host
# per metal pair with no DFT label before session 14, chosen by v0.5-dft's BALD on runs/screen6, host and H* at
# the model's best site), balanced over the two cores: queue_s14's second core ran out of hosts after Hf2@4Nf.
# Finished single points are skipped and an interrupted one continues from its SCF checkpoint in dft/logs,
# so the script resumes after a kill. Needs runs/screen6/results.db (`screen run --db runs/screen6/results.db`
# with the v0.5-dft network, relaxation hash m976adfb7b2cd0e3c).
# Start:  cd /work/main && nohup setsid bash dft/queue_s16.sh >> runs/queue_s16.log 2>&1 &
# `--after-pid PID`: start the second core's chain only when process PID (a running chain) has ended.
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
COMMON="screen validate --engine gpaw --preset pw500 --workers 1 --labels dft/labels.db --no-progress --max 12"
V6="$COMMON --db runs/screen6/results.db --model-hash m976adfb7b2cd0e3c --exclude-hosts benchmarks/heldout_hosts.txt"
if [ "$1" = "--after-pid" ]; then
  while kill -0 "$2" 2>/dev/null; do sleep 60; done
  $V6 --select id:Ni2@2Nd >> runs/queue_s16b.log 2>&1
  exit
fi
( $V6 --select id:Nb2@2Nf,W2@2Nf,Rh2@4Ne >> runs/queue_s16a.log 2>&1 ) &
( $V6 --select id:Hf2@4Nf,Ni2@2Nd >> runs/queue_s16b.log 2>&1 ) &
wait
