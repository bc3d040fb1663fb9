#!/usr/bin/env bash
# DFT queue of session 23 (GPAW PW PBE 500 eV, 3x3x1 k, spin-polarised): dft/queue_s22.sh's work, written back
# into runs/screen7 (v0.5.1's ΔG rows under the settings with the pair_stretched flag, settings
# sac5fe908216b3a49) instead of runs/screen6. First the held-out *calibration* hosts of
# benchmarks/heldout_hosts.txt in the file's order, at v0.5.1's best site and its best metal site; then the
# training hosts of dft/queue_s17.sh. Labels go to dft/labels.db, shared by both stores: finished single points
# are skipped, an interrupted one continues from its SCF checkpoint in dft/logs.
# Why the calibration hosts first: benchmarks/sigma_calibration.py fits the ΔGH* σ factor on them and checks
# it on the test hosts; with 5 of 12 labelled (BENCHMARKS.md sigma_calibration_s23) the factor is too noisy
# to apply; they also widen the paired held-out comparison of the build steps.
# runs/screen7 is made from runs/screen6 as docs/dft.md says (3.8 min, no relaxation).
# Start:  cd /work/main && nohup setsid bash dft/queue_s23.sh >> runs/queue_s23.log 2>&1 &
# Stop:   pkill -f queue_s23.sh; pkill -TERM -f "screen validate"
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
STORE="--db runs/screen7/results.db --model-hash mf1f0d8beecbfac41 --settings-hash sac5fe908216b3a49"
CAL=V2@4Ne,Rh2@2Nd,Pt2@2Nf,Ta2@2Nc,Ir2@5Nb,Au2@2Ne,Hf2@3Nd,W2@4Nc,Cr2@5Na,Ru2@3Na,Mo2@3Nf
screen validate --engine gpaw --preset pw500 --labels dft/labels.db --no-progress $STORE \
  --workers 2 --site-classes metal --select "id:$CAL"
TRAIN=Ag2@2Nd,Ru2@2Nd,Fe2@2Nd,Ir2@2Nd,Au2@2Nd,Cu2@4Nb,Nb2@2Nb,Cr2@3Nf,Mo2@2Nd,Pd2@2Nd,Mn2@2Nd,Os2@2Ne,Re2@4Nf
screen validate --engine gpaw --preset pw500 --labels dft/labels.db --no-progress $STORE \
  --exclude-hosts benchmarks/heldout_hosts.txt --workers 2 --select "id:$TRAIN"
