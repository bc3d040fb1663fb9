#!/usr/bin/env bash
# DFT queue for the session after 11 (GPAW PW PBE 500 eV, 3x3x1 k, spin-polarised): make every held-out host
# site-complete (DFT at its best metal site and at its best N/C site), so the per-host DFT ΔGH* is a minimum
# over both classes. Core 1: the metal sites left by dft/site_queue_s11.sh (Ru2@2Nf and Zr2@4Nf are done and
# skipped), Fe2@3Nd; core 2: Pt2@4Nd (resumes from its SCF checkpoint if dft/logs still holds it), then the N/C sites of
# the two hosts whose best site is already a metal (Re2@3Nc, Mo2@2Nc). Finished single points are skipped.
# Needs runs/screen4/results.db with the v0.4 network's relaxations (`screen run --db runs/screen4/results.db`;
# any anchoring of the same network reuses them); pinned to the shipped default's run (v0.4-dft-site).
# Start:  cd /work/main && nohup setsid bash dft/site_queue_s12.sh >> runs/site_queue.log 2>&1 &
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
V="screen validate --db runs/screen4/results.db --engine gpaw --preset pw500 --workers 1 --labels dft/labels.db --no-progress --max 12 --model-hash mbeaf24df120b873e"
( $V --site-classes metal --select id:Ru2@2Nf,Fe2@3Nd > runs/site_s12a.log 2>&1 ) &
( $V --site-classes metal --select id:Zr2@4Nf,Pt2@4Nd > runs/site_s12b.log 2>&1
  $V --site-classes N,C --select id:Re2@3Nc,Mo2@2Nc >> runs/site_s12b.log 2>&1 ) &
wait
