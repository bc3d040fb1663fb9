#!/usr/bin/env bash
# DFT queue of session 14 (GPAW PW PBE 500 eV, 3x3x1 k, spin-polarised), issue 10: DFT training labels for the
# seven metals that have none yet. One host per metal pair, chosen by the shipped v0.5-dft posterior's BALD
# (`--select bald:per-metal --skip-labelled-pairs --exclude-hosts benchmarks/heldout_hosts.txt` on runs/screen6
# gave, in this order: Nb2@2Nf Co2@2Nf W2@2Nf V2@3Na Rh2@4Ne Hf2@4Nf Ni2@2Nd); each gets the host and H* at
# the model's best site. Core 1 first finishes the held-out Mo2@2Nc N/C site left by dft/site_queue_s12.sh
# (resumes from its SCF checkpoint if dft/logs still holds it). Finished single points are skipped, so the
# script resumes after a kill.
# Needs runs/screen6/results.db (v0.5-dft's full screen, `screen run --db runs/screen6/results.db`) and
# runs/screen4/results.db (v0.4 network, for Mo2@2Nc).
# Start:  cd /work/main && nohup setsid bash dft/queue_s14.sh >> runs/queue_s14.log 2>&1 &
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
COMMON="screen validate --engine gpaw --preset pw500 --workers 1 --labels dft/labels.db --no-progress --max 12"
V6="$COMMON --db runs/screen6/results.db --model-hash m976adfb7b2cd0e3c --exclude-hosts benchmarks/heldout_hosts.txt"
# Session 15 dropped the Mo2@2Nc C site (top_X2 of the v0.4 screen) after 45 SCF iterations over three runs: the
# magnetic moment kept swinging between 0.59 and 1.16 μB and the density error never went below 10^-3.5, while
# the energy stayed within -271.172..-271.182 eV (ΔE_H ≈ -0.19 eV, ~0.67 eV above the host's metal site;
# not a label). Its log is dft/logs/0884abd05d0d81b2-8105ed16eae5.a0*.txt.
( $V6 --select id:Nb2@2Nf,W2@2Nf,Rh2@4Ne,Ni2@2Nd >> runs/queue_s14a.log 2>&1 ) &
( $V6 --select id:Co2@2Nf,V2@3Na,Hf2@4Nf >> runs/queue_s14b.log 2>&1 ) &
wait
