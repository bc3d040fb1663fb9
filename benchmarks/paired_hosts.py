"""Is one DFT-anchored model better than another on the same held-out hosts, or is the gap noise?

Two ``screen bench anchor`` result files (``benchmarks/results/<section>.json``) evaluate variants on the same
held-out DFT triples. Their per-host MAEs each carry a wide bootstrap interval (ten hosts), but the two models
are judged on the *same* hosts, so the paired difference of the per-host absolute errors is much tighter.
This prints, per host, DFT's lowest ΔE_H and each variant's error there, then the mean paired difference with a
90 % bootstrap interval (hosts resampled with replacement, seeded) and the share of resamples in which the
second variant is better: the number behind "ship only if it beats the shipped model".

Usage: python benchmarks/paired_hosts.py A.json:VARIANT B.json:VARIANT [--boot N]
  e.g. python benchmarks/paired_hosts.py benchmarks/results/anchor_s17_v051.json:base \
           benchmarks/results/anchor_s17.json:replay
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def host_errors(path: str, variant: str) -> dict[str, float]:
    """Signed per-host error (eV) of ``variant``: its lowest ΔE_H over the host's labelled sites minus DFT's."""
    data = json.load(open(path))
    rows = data["hosts"]
    if not rows or variant not in rows[0]:
        allowed = sorted(k for k in (rows[0] if rows else {}) if f"{k}_site" in (rows[0] if rows else {}))
        raise SystemExit(f"variant '{variant}' not in {path}; allowed: {', '.join(allowed) or 'none'}")
    return {r["host"]: float(r[variant]) - float(r["dft_de"]) for r in rows}


def paired(a: dict[str, float], b: dict[str, float], n_boot: int = 10000, seed: int = 0) -> dict[str, float]:
    """Mean of |b| − |a| over the hosts both evaluate (negative: b is better), its 90 % bootstrap interval and
    the bootstrap share of resamples where b's MAE is lower by more than 1 meV."""
    hosts = sorted(set(a) & set(b))
    if len(hosts) < 2:
        raise SystemExit(f"only {len(hosts)} host(s) in common; need at least 2")
    d = np.array([abs(b[h]) - abs(a[h]) for h in hosts])
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = np.quantile(boot, [0.05, 0.95])
    return {
        "n": len(hosts),
        "mae_a": float(np.mean([abs(a[h]) for h in hosts])),
        "mae_b": float(np.mean([abs(b[h]) for h in hosts])),
        "diff": float(d.mean()),
        "lo": float(lo),
        "hi": float(hi),
        "p_better": float(np.mean(boot < -1e-3)),  # under 1 meV (same network) is a tie
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="FILE.json:VARIANT, the reference (e.g. the shipped model)")
    ap.add_argument("b", help="FILE.json:VARIANT, the candidate")
    ap.add_argument("--boot", type=int, default=10000)
    args = ap.parse_args()
    specs = []
    for spec in (args.a, args.b):
        path, sep, variant = spec.rpartition(":")
        if not sep or not path:
            raise SystemExit(
                f"bad argument '{spec}'; allowed: FILE.json:VARIANT, e.g. anchor_s17.json:replay"
            )
        specs.append((path, variant))
    a, b = (host_errors(p, v) for p, v in specs)
    print(f"| host | {specs[0][1]} error (eV) | {specs[1][1]} error (eV) |\n|---|---|---|")
    for h in sorted(set(a) & set(b)):
        print(f"| {h} | {a[h]:+.3f} | {b[h]:+.3f} |")
    r = paired(a, b, args.boot)
    print(
        f"\n{r['n']} hosts: MAE {r['mae_a']:.3f} -> {r['mae_b']:.3f} eV; paired difference {r['diff']:+.3f} eV "
        f"(90 % bootstrap {r['lo']:+.3f} to {r['hi']:+.3f}); candidate better in {100 * r['p_better']:.0f} % of "
        "resamples"
    )


if __name__ == "__main__":
    main()
