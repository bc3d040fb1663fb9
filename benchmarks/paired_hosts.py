"""Is one DFT-anchored model better than another on the same held-out hosts, or is the gap noise?

Two ``screen bench anchor`` result files (``benchmarks/results/<section>.json``) evaluate variants on the same
held-out DFT triples. Each per-host MAE of ten hosts carries a wide bootstrap interval, but the two models are
judged on the *same* hosts, so the paired difference of the per-host absolute errors is much tighter
(:func:`screening.bench_anchor.paired_host_difference`). Prints each host's error for both variants, then the
mean paired difference with its 90 % bootstrap interval and the share of resamples in which the second variant
is better: the number behind "ship only if it beats the shipped model".

Usage: python benchmarks/paired_hosts.py A.json:VARIANT B.json:VARIANT
  e.g. python benchmarks/paired_hosts.py benchmarks/results/anchor_s17_v051.json:base \
           benchmarks/results/anchor_s17.json:replay
"""

from __future__ import annotations

import argparse
import json

from screening.bench_anchor import paired_host_difference


def host_errors(path: str, variant: str) -> dict[str, float]:
    """Signed per-host error (eV) of ``variant``: its lowest ΔE_H over the host's labelled sites minus DFT's."""
    rows = json.load(open(path))["hosts"]
    allowed = sorted(
        k[: -len("_site")] for k in (rows[0] if rows else {}) if k.endswith("_site") and k != "dft_site"
    )
    if variant not in allowed:
        raise SystemExit(f"variant '{variant}' not in {path}; allowed: {', '.join(allowed) or 'none'}")
    return {r["host"]: float(r[variant]) - float(r["dft_de"]) for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="FILE.json:VARIANT, the reference (e.g. the shipped model)")
    ap.add_argument("b", help="FILE.json:VARIANT, the candidate")
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
    r = paired_host_difference(a, b)
    print(
        f"\n{r['n']} hosts: MAE {r['mae_a']:.3f} -> {r['mae_b']:.3f} eV; paired difference {r['diff']:+.3f} eV "
        f"(90 % bootstrap {r['lo']:+.3f} to {r['hi']:+.3f}); candidate better in {100 * r['p_better']:.0f} % of "
        "resamples"
    )


if __name__ == "__main__":
    main()
