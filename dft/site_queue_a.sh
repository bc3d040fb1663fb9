#!/usr/bin/env bash
# Core 1 of dft/site_queue.sh without Cu2@4Na: this session's re-screen ranks Cu2@4Na's top_X4 (0.045 eV below
# top_X0, the site the DFT triple has) first, so validating it would add a best-site single point, and its
# metal sites sit ~1.9 eV above (a metal-site label there says little). Hosts whose site the site-class
# anchoring moves to a metal first. Waits for the Ti2@5Na single point.
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
while pgrep -f "select id:Ti2@5Na" > /dev/null; do sleep 30; done
screen validate --db runs/screen4/results.db --engine gpaw --preset pw500 --workers 1 --labels dft/labels.db \
  --no-progress --site-classes metal --max 12 --select id:Ir2@2Nb,Os2@4Ne,Au2@5Na,Zr2@4Nf,Ru2@2Nf,Pt2@4Nd,Fe2@3Nd \
  > runs/site_a.log 2>&1
