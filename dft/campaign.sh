#!/usr/bin/env bash
# Background DFT labelling campaign (GPAW plane-wave PBE 400 eV, 3x3x1 k on the 30-atom 4x4 cell, spin-polarised).
# Resumable: finished rows in dft/labels.db are skipped, so re-running this script continues where it stopped.
# Start (one core):  cd /work/main && nohup setsid bash dft/campaign.sh >> dft/campaign.log 2>&1 &
# Queue order: the shared H2 reference, then complete dE_H pairs (host, host+H@top_M1), spanning metals and motifs;
# the settings check (pw500k4 = 500 eV, 4x4x1 k) last, at low priority.
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
DB=dft/labels.db
L="screen label --engine gpaw --supercell 4x4 --sites top_M1 --db $DB --readme dft/README.md"
echo "=== campaign start $(date -Is) pid $$"
$L --preset pw400 --h2
for step in "Fe,Ni 6Na" "Co 5Na" "Cu 4Nb" "Mn 6Na" "Ru 5Na" "Rh 4Nb" "Pd 6Na" "Pt 5Na" "Ir 4Nb" \
            "Co,Cu,Mn,Ru,Rh,Pd,Pt,Ir 6Na" "Fe,Ni 5Na,4Nb"; do
  set -- $step
  echo "=== pw400 $1 $2 $(date -Is)"
  $L --preset pw400 --hosts "$1" --motifs "$2"
done
echo "=== settings check pw500k4 $(date -Is)"
$L --preset pw500k4 --h2
$L --preset pw500k4 --hosts Fe,Ni,Cu --motifs 6Na
echo "=== campaign done $(date -Is)"
