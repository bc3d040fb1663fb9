"""Where do the shipped model's ΔE_H errors on never-trained hosts come from? (docs/dft.md, session 16)

Reads the model card's per-structure DFT comparison (``benchmarks/results/model.json``, written by
``screen bench model``) and the DFT label store, and prints two checks over the held-out structures at the
model-relaxed geometries (``screen validate``):

1. geometry: Spearman rank correlation of |model − DFT| ΔE_H with the DFT force on H at that geometry. A
   single point far from the DFT minimum (large force) would inflate the error if the geometry were to blame.
2. site class: a leave-one-host-out offset per binding class (H on a metal / N / C), shrunk towards zero with
   ``kappa`` pseudo-hosts, fitted on the other held-out hosts' residuals: does a class-level bias transfer?

Usage: python benchmarks/heldout_error_sources.py [model.json] [labels.db] [settings_hash]
"""

from __future__ import annotations

import json
import sys

import numpy as np
from scipy.stats import spearmanr

from screening.bench_anchor import host_level
from screening.bench_model import dft_triples


def per_host_mae(rows: list[dict], key: str) -> float:
    """Mean over hosts of |lowest ``key`` − lowest DFT| over each host's labelled sites (eV;
    :func:`screening.bench_anchor.host_level`)."""
    return host_level(rows, [key])[0][key]["mae"]


def main(model_json: str, labels: str, settings_hash: str) -> None:
    card = json.load(open(model_json))
    rows = [r for r in card["dft"] if r["role"] == "held out" and r["geometry"] == "validate"]
    triples = {t["name"]: t for t in dft_triples(labels, settings_hash, max_h_force=float("inf"))}
    keys = ("h_force", "host_fmax", "state_fmax")
    rows = [{**r, **{k: triples[r["name"]][k] for k in keys}} for r in rows if r["name"] in triples]
    hosts = sorted({r["host"] for r in rows})
    print(
        f"{len(rows)} held-out structures of {len(hosts)} hosts (model {card['model']}, {card['model_hash'][:16]})"
    )
    err = np.array([abs(r["model_de"] - r["dft_de"]) for r in rows])
    f = np.array([r["h_force"] for r in rows])
    rho = spearmanr(f, err)
    print(
        f"1. |error| vs DFT force on H ({f.min():.2f}-{f.max():.2f} eV/Å): Spearman {rho.statistic:+.2f} "
        f"(p {rho.pvalue:.2f})"
    )
    print(f"2. class offsets, leave one host out: none: structure MAE {err.mean():.3f}, per host "
          f"{per_host_mae(rows, 'model_de'):.3f} eV")  # fmt: skip
    for kappa in (0, 1, 2, 4):
        out = []
        for r in rows:
            res = [o["model_de"] - o["dft_de"] for o in rows
                   if o["host"] != r["host"] and o["site_class"] == r["site_class"]]  # fmt: skip
            offset = sum(res) / (len(res) + kappa) if res else 0.0
            out.append({**r, "corrected": r["model_de"] - offset})
        mae = np.mean([abs(r["corrected"] - r["dft_de"]) for r in out])
        print(f"   kappa {kappa}: structure MAE {mae:.3f}, per host {per_host_mae(out, 'corrected'):.3f} eV")
    signed = np.array([r["model_de"] - r["dft_de"] for r in rows])
    host_f = np.array([r["host_fmax"] for r in rows])
    rho_a, rho_s = spearmanr(host_f, np.abs(signed)), spearmanr(host_f, signed)
    print(
        f"3. the largest DFT force on any atom of the host at the model geometry ({host_f.min():.2f}-"
        f"{host_f.max():.2f} eV/Å) against |error|: Spearman {rho_a.statistic:+.2f} (p {rho_a.pvalue:.2f}); "
        f"against the signed error: {rho_s.statistic:+.2f} (p {rho_s.pvalue:.2f})"
    )
    for cut in (4.0, 5.0, 6.0):
        keep = host_f <= cut
        if keep.any():
            print(
                f"   hosts with DFT force <= {cut:g} eV/Å: {int(keep.sum())} structures, MAE "
                f"{np.abs(signed[keep]).mean():.3f}, mean error {signed[keep].mean():+.3f}; above: "
                f"{int((~keep).sum())}, MAE {np.abs(signed[~keep]).mean() if (~keep).any() else float('nan'):.3f}, "
                f"mean error {signed[~keep].mean() if (~keep).any() else float('nan'):+.3f}"
            )


if __name__ == "__main__":
    args = (
        sys.argv[1:] + ["benchmarks/results/model.json", "dft/labels.db", "8105ed16eae5"][len(sys.argv[1:]) :]
    )
    main(*args[:3])
