"""Did the DFT fine-tuning beat the network it started from, and its teacher, on hosts it never trained on?

ΔE_H at the model-relaxed geometries of every plane-wave DFT triple (``screen validate`` rows of one settings
hash) whose host is *not* among the shipped model's DFT training hosts (``potentials.checkpoint.dft_hosts``):
the hosts of the model card's DFT section. Each network given as NAME=CHECKPOINT (posterior mean energies,
no anchoring offsets) and SevenNet-0 (``--no-sevenn`` skips it) predict every triple. Prints per predictor
the per-structure MAE and mean error, and the per-host MAE (lowest labelled site,
:func:`screening.bench_anchor.host_level`) with its 90 % bootstrap interval; then, for every predictor
against the first one, the paired per-host difference (:func:`screening.bench_anchor.paired_host_difference`).

``--hosts-file benchmarks/heldout_hosts.txt`` judges on the held-out hosts instead (no model may have trained
on them): with the posterior a `screen bench anchor` run left (e.g. runs/anchor_s20cu/replay-*/posterior.pt),
it re-measures that fine-tuning against the shipped model on held-out hosts labelled since, without training
again.

Usage (the pre-DFT network is v0.4-dft-site's, `git show 2ab72aa:potentials/models/default.pt > runs/v04_dft_site.pt`):
  OMP_NUM_THREADS=1 python benchmarks/student_teacher.py v0.5.1=potentials/models/default.pt \
      v0.4=runs/v04_dft_site.pt [--labels dft/labels.db] [--settings-hash 8105ed16eae5] \
      [--out benchmarks/results/student_teacher.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "models", nargs="+", help="NAME=CHECKPOINT; the first one's DFT hosts define 'never trained'"
    )
    ap.add_argument("--labels", default="dft/labels.db")
    ap.add_argument("--settings-hash", default="8105ed16eae5")
    ap.add_argument("--no-sevenn", action="store_true", help="leave SevenNet-0 out")
    ap.add_argument(
        "--hosts-file",
        default=None,
        help="judge on the hosts this file names (e.g. benchmarks/heldout_hosts.txt; '#' starts a comment) "
        "instead of those the first model never trained on; every model must then have none of them in its "
        "DFT training hosts",
    )
    ap.add_argument("--out", default="benchmarks/results/student_teacher.json")
    args = ap.parse_args()
    from screening.bench_model import parse_named_models

    specs = parse_named_models(args.models)

    import torch

    from potentials.calculator import BayesianCalculator
    from potentials.checkpoint import dft_hosts, load
    from screening.anchoring import site_class
    from screening.bench_anchor import host_level, paired_host_difference
    from screening.bench_model import (
        calc_triple_de,
        dft_triples,
        left_out_note,
        left_out_records,
        sevenn_calculator,
    )

    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(1)
    trained_on = {name: dft_hosts(load(path)) for name, path in specs}
    trained = trained_on[specs[0][0]]
    if args.hosts_file:
        from structures.common import InputError, read_host_list

        try:
            keep = set(read_host_list(args.hosts_file, "--hosts-file"))
        except InputError as e:
            raise SystemExit(str(e)) from None
        for name, hosts in trained_on.items():
            seen = keep & hosts
            if seen:
                raise SystemExit(f"{name} trained on {', '.join(sorted(seen))} of {args.hosts_file}")

    def wanted(t: dict) -> bool:
        return t["geometry"] == "validate" and (
            t["host"] in keep if args.hosts_file else t["host"] not in trained
        )

    left_out: list = []
    triples = [
        t for t in dft_triples(args.labels, settings_hash=args.settings_hash, left_out=left_out) if wanted(t)
    ]
    left_out = [t for t in left_out if wanted(t)]
    calcs = {name: BayesianCalculator(path) for name, path in specs}
    if not args.no_sevenn:
        calcs["SevenNet-0"] = sevenn_calculator()
    t0 = time.perf_counter()
    rows = []
    for t in triples:
        row = {
            "name": t["name"],
            "host": t["host"],
            "site_class": site_class(t["atoms"][1]),
            "dft_de": t["dft_de"],
        }
        row.update({n: float(calc_triple_de(c, t["atoms"])) for n, c in calcs.items()})
        rows.append(row)
    names = list(calcs)
    summ, per_host = host_level(rows, names)
    which = (
        f"hosts of {args.hosts_file}"
        if args.hosts_file
        else f"never-trained hosts ({len(trained)} DFT training hosts of {specs[0][0]})"
    )
    print(f"{len(rows)} triples of {len(per_host)} {which}, {time.perf_counter() - t0:.0f} s\n")
    if left_out:
        print(left_out_note(left_out) + "\n")
    print("| predictor | structure MAE (eV) | mean error | host MAE (eV) | 90 % interval | right site |")
    print("|---|---|---|---|---|---|")
    out: dict = {
        "labels": args.labels,
        "settings_hash": args.settings_hash,
        "models": dict(specs),
        "summary": {},
    }
    for n in names:
        e = np.array([r[n] - r["dft_de"] for r in rows])
        s = summ[n]
        out["summary"][n] = {
            "structure_mae": float(np.abs(e).mean()),
            "structure_mean": float(e.mean()),
            **{k: s[k] for k in ("n", "mae", "mae_ci", "mean", "site_right")},
        }
        lo, hi = s["mae_ci"]
        print(
            f"| {n} | {np.abs(e).mean():.3f} | {e.mean():+.3f} | {s['mae']:.3f} | {lo:.2f}–{hi:.2f} | "
            f"{s['site_right']:.0%} |"
        )
    ref = names[0]
    errs = {n: {h["host"]: h[n] - h["dft_de"] for h in per_host if n in h} for n in names}
    out["paired"] = {}
    for n in names[1:]:
        p = paired_host_difference(errs[ref], errs[n])
        out["paired"][n] = p
        print(
            f"\n{n} against {ref} per host: {p['diff']:+.3f} eV (90 % {p['lo']:+.3f} to {p['hi']:+.3f}), "
            f"better in {100 * p['p_better']:.0f} % of resamples"
        )
    out["rows"], out["hosts"] = rows, per_host
    out["left_out"] = left_out_records(left_out)
    json.dump(out, open(args.out, "w"), indent=1)
    print(f"\n-> {args.out}")


if __name__ == "__main__":
    main()
