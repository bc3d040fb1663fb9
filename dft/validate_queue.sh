#!/usr/bin/env bash
# DFT queue (GPAW PW PBE 500 eV, 3x3x1 k, spin-polarised, model-relaxed geometries of the v0.4 full screen
# runs/screen4). Two processes, one core each; resumable: finished single points are skipped, so re-running
# this script after a stop only computes what is missing. GPAW should be the FFTW build (dft/gpaw_siteconfig.py).
# Start:  cd /work/main && nohup setsid bash dft/validate_queue.sh >> runs/validate_queue.log 2>&1 &
#
# Done so far (dft/README.md): ten held-out hosts with a DFT ΔGH* (benchmarks/heldout_hosts.txt: Cu2@4Na, Pt2@4Nd,
# Au2@5Na, Ir2@2Nb, Os2@4Ne, Re2@3Nc, Ru2@2Nf, Mo2@2Nc, Fe2@3Nd, Zr2@4Nf) and five DFT training hosts (Pt2@5Na,
# Ir2@4Nc, Os2@3Ne, Re2@5Nb, Ru2@5Na); the cutoff check on Cu2@4Na and Pt2@5Na (pw600) and the k-point check.
#
# Core 1: training hosts, one per metal pair without a DFT training label. `screen bench dft-al` found a random
#   host per unlabelled pair at least as good as BALD ordering for anchoring (the model's σ does not track its
#   DFT error), so new picks come from `--select random:per-metal --skip-labelled-pairs --exclude-hosts
#   benchmarks/heldout_hosts.txt`; the list below is the earlier picks, one per pair already.
# Core 2: the cell-size check (dft/queue_b_cell.sh: Cu2@4Na builder geometry, 4x4 against 5x5 at pw500, about 4
#   core-hours), then more training hosts.
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
V="screen validate --db runs/screen4/results.db --engine gpaw --preset pw500 --workers 1 --labels dft/labels.db --no-progress"
$V --max 12 --select id:Fe2@2Ne,Au2@4Nf,Co2@5Nb,Mn2@2Na,Pd2@5Na,Ta2@4Na,Cr2@5Nb,Zr2@5Nb,Ti2@5Na > runs/val_a.log 2>&1 &
( bash dft/queue_b_cell.sh
  $V --max 12 --select id:Mo2@2Ne,Ag2@5Na,Nb2@4Nf,Rh2@5Na,Cu2@5Nb,V2@4Na,W2@2Na,Hf2@2Na,Ni2@3Ne > runs/val_b.log 2>&1 ) &
wait
