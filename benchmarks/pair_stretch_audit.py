"""Audit a screen for H* states that pull the metal pair apart (issue 10: spurious minima of the model).

Session 22 found one: v0.5.1 relaxes Rh2@2Nd's H* at top_M2 with the Rh pair stretched from 2.51 Å (host)
to 2.98 Å, a geometry where plane-wave DFT puts 19.1 eV/Å on a Rh and ΔE_H +4.8 eV. This lists, for every
host of a screen store, the metal–metal distance of the relaxed host and of the H* state at the host's best
site, and how many best-site H* states stretch the pair by more than a threshold: candidates for a DFT
relaxation (`screen validate --relax`), not verdicts. Distances in Å.

    python benchmarks/pair_stretch_audit.py runs/screen6/results.db mf1f0d8beecbfac41 [--threshold 0.3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from screening.flags import metal_geometry  # noqa: E402
from screening.store import load_results, load_structures  # noqa: E402


def mm_distance(atoms) -> float:
    """Metal–metal distance (Å, minimum image) of a stored TM2@N-graphene structure (its pocket indices)."""
    return metal_geometry(atoms).get("mm_distance", float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db")
    ap.add_argument("model_hash")
    ap.add_argument("--threshold", type=float, default=0.3, help="stretch that counts (Å, default 0.3)")
    ap.add_argument("--out", default="benchmarks/results/pair_stretch_audit.json")
    args = ap.parse_args()
    res = load_results(args.db, model_hash=args.model_hash).set_index("host")
    smh = str(res["structure_model_hash"].iloc[0])
    structs = load_structures(args.db, model_hash=smh)
    by_name = {r["name"]: r["atoms"] for _, r in structs.iterrows()}
    rows = []
    for host, r in res.iterrows():
        h, hh = by_name.get(host), by_name.get(f"{host}+H@{r['best_site']}")
        if h is None or hh is None:
            continue
        d0, d1 = mm_distance(h), mm_distance(hh)
        rows.append(
            {"host": host, "best_site": r["best_site"], "dg": float(r["dg"]), "mm_host": d0, "mm_h": d1}
        )
    stretch = np.array([x["mm_h"] - x["mm_host"] for x in rows])
    flagged = sorted(
        (x for x in rows if x["mm_h"] - x["mm_host"] > args.threshold), key=lambda x: x["mm_host"] - x["mm_h"]
    )
    out = {
        "db": args.db,
        "model_hash": args.model_hash,
        "threshold": args.threshold,
        "hosts": len(rows),
        "stretch_median": float(np.median(stretch)),
        "stretch_p95": float(np.percentile(stretch, 95)),
        "flagged": flagged,
    }
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(
        f"{len(rows)} hosts; best-site H* stretches the pair by median {out['stretch_median']:+.3f} Å, "
        f"95th percentile {out['stretch_p95']:+.3f}; {len(flagged)} by more than {args.threshold:g} Å:"
    )
    for x in flagged:
        print(
            f"  {x['host']:10s} {x['best_site']:8s} {x['mm_host']:.2f} -> {x['mm_h']:.2f} Å  ΔGH* {x['dg']:+.2f} eV"
        )
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
