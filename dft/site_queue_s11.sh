#!/usr/bin/env bash
# DFT queue of session 11 (GPAW PW PBE 500 eV, 3x3x1 k, spin-polarised): the model's best *metal* H* site of
# the held-out hosts whose only DFT site so far binds H to a first-shell N or C. Until these are labelled, the
# per-host DFT ΔGH* of such a host (a minimum over labelled sites) is an upper bound: on Ir2@2Nb and Ru2@5Na
# the metal site was ~1 eV deeper than the N/C site. Both cores, held-out hosts only; Os2@4Ne+H@top_M1 resumes
# from its SCF checkpoint of session 10. Cu2@4Na is left out: its model metal sites sit ~1.9 eV above its
# best site. Resumable: finished single points are skipped.
# Needs runs/screen4/results.db (`screen run --db runs/screen4/results.db` with the shipped model).
# Start:  cd /work/main && nohup setsid bash dft/site_queue_s11.sh >> runs/site_queue.log 2>&1 &
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
V="screen validate --db runs/screen4/results.db --engine gpaw --preset pw500 --workers 1 --labels dft/labels.db --no-progress --site-classes metal --max 12"
$V --select id:Os2@4Ne,Ru2@2Nf,Fe2@3Nd > runs/site_s11a.log 2>&1 &
$V --select id:Au2@5Na,Zr2@4Nf,Pt2@4Nd > runs/site_s11b.log 2>&1 &
wait
