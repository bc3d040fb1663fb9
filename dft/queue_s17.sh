#!/usr/bin/env bash
# DFT queue of session 17 (GPAW PW PBE 500 eV, 3x3x1 k, spin-polarised), after dft/queue_s16.sh: a second host
# for thirteen metal pairs, chosen once (session 17) by v0.5.1's BALD, the most informative host of each pair
# (`--select bald:per-metal`) among the hosts with no DFT label yet and outside benchmarks/heldout_hosts.txt:
#   screen export --db runs/screen6/results.db --model-hash mf1f0d8beecbfac41 --select bald:per-metal \
#     --exclude-hosts runs/exclude_s17.txt --max 23 --format extxyz --out /tmp/bald_s17
# (runs/exclude_s17.txt = the held-out hosts + every host in dft/labels.db at that time). The list is fixed
# here so that a resumed queue finishes the same hosts. Host and H* at v0.5.1's best site, two label workers;
# finished single points are skipped and an interrupted one continues from its SCF checkpoint in dft/logs.
# Each host is written back into runs/screen6 (v0.5.1 rows) when its three single points are done.
# Start:  cd /work/main && nohup setsid bash dft/queue_s17.sh >> runs/queue_s17.log 2>&1 &
#         (--after-pid PID: wait for that process, e.g. a running queue_s16.sh, first)
# Stop:   pkill -f queue_s17.sh; pkill -TERM -f "screen validate"
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
if [ "$1" = "--after-pid" ]; then
  while kill -0 "$2" 2>/dev/null; do sleep 60; done
fi
# Order (session 17, after the teacher comparison of docs/dft.md): first the pairs whose held-out hosts carry
# the largest errors (Ru, Fe, Ir, Au, and Cu, whose only DFT host is held out: BALD's Cu host, 18th of its
# list), so whether a second host of a pair teaches its held-out host is tested soonest; then BALD's order.
HOSTS=Ag2@2Nd,Ru2@2Nd,Fe2@2Nd,Ir2@2Nd,Au2@2Nd,Cu2@4Nb,Nb2@2Nb,Cr2@3Nf,Mo2@2Nd,Pd2@2Nd,Mn2@2Nd,Os2@2Ne,Re2@4Nf
screen validate --engine gpaw --preset pw500 --labels dft/labels.db --no-progress --db runs/screen6/results.db \
  --model-hash mf1f0d8beecbfac41 --exclude-hosts benchmarks/heldout_hosts.txt --workers 2 --select "id:$HOSTS"
