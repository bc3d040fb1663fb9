"""Learning curve of the DFT-anchored model: held-out per-host ΔE_H MAE against the number of DFT training hosts.

Issue 10 asks how far the DFT budget is from 0.15 eV. Twelfth measurement of docs/dft.md: 22 hosts tied 16.
This runs ``screen bench anchor --variants replay --train-hosts N --seed S`` (v0.5's recipe on a seeded subset
of N DFT training hosts) for every N and seed, each into its own BENCHMARKS.md section ``anchor_lc_N<N>_s<S>``,
then prints the mean and spread of the per-host MAE over seeds for each N. A fine-tuning takes ~45 min on one
CPU core and about as long on a GPU (``--device cuda``; measured on an H200 in session 22, BENCHMARKS.md
screen_full_cuda: 8.3 s per epoch at batch 4, bound by kernel launches), so the grid wants many cores or
several fine-tunings sharing a GPU, not a faster chip; ``table`` alone summarises whatever points exist.

Usage:
  python benchmarks/anchor_learning_curve.py run [--hosts 6,11,16,22] [--seeds 0,1,2] [--device cuda] [--jobs 4]
  python benchmarks/anchor_learning_curve.py table
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import numpy as np

RESULTS = Path("benchmarks/results")
BASE = [
    "screen", "bench", "anchor", "--model", "runs/v04_dft_site.pt", "--dft-db", "dft/labels.db",
    "--preset", "pw500", "--heldout", "benchmarks/heldout_hosts.txt", "--variants", "replay", "--no-loho",
    "--no-sevenn", "--replay", "benchmarks/data/replay/replay_refs.extxyz", "--replay-n", "300",
    "--replay-energies", "references", "--pretrain-valid", "benchmarks/data/replay/pre_valid.extxyz",
]  # fmt: skip


def run(hosts: list[int], seeds: list[int], device: str, jobs: int = 1) -> None:
    """One fine-tuning per (N, seed) not already in benchmarks/results (resumable), ``jobs`` at a time: on a
    GPU each step of these small slabs waits on kernel launches (8.3 s an epoch on an H200 at batch 4, about a
    CPU core's speed; BENCHMARKS.md screen_full_cuda), so several processes share one GPU; on CPUs each takes
    one core (OMP_NUM_THREADS=1)."""
    import os

    todo = []
    for n in hosts:
        for s in seeds:
            section = f"anchor_lc_N{n}_s{s}"
            if (RESULTS / f"{section}.json").exists():
                print(f"{section}: done")
                continue
            cmd = [*BASE, "--train-hosts", str(n), "--seed", str(s), "--device", device]
            todo.append([*cmd, "--out", f"runs/anchor_lc/N{n}_s{s}", "--section", section])
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if jobs > 1 else None
    running: list[subprocess.Popen] = []
    failed = 0
    for cmd in todo:
        while len(running) >= max(jobs, 1):
            failed += _reap(running)
        print(" ".join(cmd), flush=True)
        running.append(subprocess.Popen(cmd, env=env))
    while running:
        failed += _reap(running)
    if failed:
        raise SystemExit(f"{failed} fine-tuning(s) failed; re-run to retry them (finished points are kept)")


def _reap(running: list) -> int:
    """Wait for one process of ``running`` to end; remove it; 1 if it failed."""
    import time

    while True:
        for p in running:
            if p.poll() is not None:
                running.remove(p)
                return int(p.returncode != 0)
        time.sleep(5)


def table() -> list[dict]:
    """Per N: seeds, mean / min / max of the held-out per-host MAE (eV) of the ``replay`` variant."""
    by_n: dict[int, list[float]] = {}
    for path in sorted(RESULTS.glob("anchor_lc_N*_s*.json")):
        m = re.fullmatch(r"anchor_lc_N(\d+)_s(\d+)\.json", path.name)
        if not m:
            continue
        hs = json.loads(path.read_text()).get("host_summary", {}).get("replay")
        if hs:
            by_n.setdefault(int(m.group(1)), []).append(float(hs["mae"]))
    rows = [
        {
            "hosts": n,
            "seeds": len(v),
            "mae": float(np.mean(v)),
            "min": float(np.min(v)),
            "max": float(np.max(v)),
        }
        for n, v in sorted(by_n.items())
    ]
    print("| DFT training hosts | seeds | held-out per-host MAE (eV), mean | min–max |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['hosts']} | {r['seeds']} | {r['mae']:.3f} | {r['min']:.3f}–{r['max']:.3f} |")
    if not rows:
        print("(no anchor_lc_* results yet: `python benchmarks/anchor_learning_curve.py run`)")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--hosts", default="6,11,16,22")
    r.add_argument("--seeds", default="0,1,2")
    r.add_argument("--device", default="cpu")
    r.add_argument("--jobs", type=int, default=1, help="fine-tunings at a time (default 1)")
    sub.add_parser("table")
    args = ap.parse_args()
    if args.cmd == "run":
        hosts, seeds = ([int(x) for x in a.split(",")] for a in (args.hosts, args.seeds))
        run(hosts, seeds, args.device, args.jobs)
    table()


if __name__ == "__main__":
    main()
