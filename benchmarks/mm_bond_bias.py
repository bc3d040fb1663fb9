"""The metal–metal bond at the model-relaxed geometries: what DFT's forces there say (docs/dft.md, thirteenth
measurement, session 18).

For every structure that ``screen validate`` labelled with plane-wave DFT (settings 8105ed16eae5), at the
shipped model's relaxed geometry, with :mod:`screening.mm_bond`:

1. the DFT force along the M–M axis against each model's (``--model``, several allowed) at the same geometry,
   per role: a host the shipped model trained on, one DFT-labelled since (later candidates trained on it), or
   one of the held-out list (no model trained on it);
2. the bond stiffness K of the shipped model and of SevenNet-0 (central differences), and DFT's own where a
   finite-difference DFT point along the bond exists (``--fd-db``: a label store holding a validated host
   with its metal pair moved along the bond, labelled with ``screen label --in``);
3. the harmonic shift of DFT ΔE_H if host and H* relaxed along the bond, and the shipped model's held-out
   errors against the DFT ΔE_H moved by it: does a biased truth explain the errors?

Usage: python benchmarks/mm_bond_bias.py [--model LABEL=PATH ...] [--fd-db DB] [--out JSON]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np

from screening.bench_anchor import host_level
from screening.bench_model import dft_triples, sevenn_calculator
from screening.mm_bond import bond_force, bond_stiffness, delta_e_h_shift, metal_pair_indices
from structures.common import read_host_list

SETTINGS = "8105ed16eae5"


def _host_mae(rows: list[dict], key: str) -> float:
    """Per-host MAE (eV) of ``key`` against ``dft_de`` (:func:`screening.bench_anchor.host_level`)."""
    return host_level(rows, [key])[0][key]["mae"]


def fd_stiffness(fd_db: str | None, hosts: dict) -> dict[str, dict]:
    """DFT K (eV/Å²) and the energy check of each finite-difference point in ``fd_db`` (a label store of
    the same settings holding a validated host, row key ``host``, with only its metal pair moved along the
    M–M axis): ΔE(DFT) vs the trapezoid −½(f0 + f1)·Δd of the two bond forces and vs first order −f0·Δd."""
    if not fd_db or not os.path.exists(fd_db):
        return {}
    import ase.db

    out = {}
    for r in ase.db.connect(fd_db).select(converged=True, settings_hash=SETTINGS):
        a0 = hosts.get(r.get("host"))
        if a0 is None:
            continue
        a1 = r.toatoms()
        i, j = metal_pair_indices(a0)
        others = [k for k in range(len(a0)) if k not in (i, j)]
        if len(a1) != len(a0) or np.abs(a1.positions[others] - a0.positions[others]).max() > 1e-6:
            continue  # not a move of the metal pair alone
        dd = float(a1.get_distance(i, j, mic=True) - a0.get_distance(i, j, mic=True))
        f0, f1 = bond_force(a0, a0.get_forces(), i, j), bond_force(a1, a1.get_forces(), i, j)
        out[r.get("host")] = {
            "dd": dd,
            "f0": f0,
            "f1": f1,
            "K": -(f1 - f0) / dd,
            "dE": float(r.energy - a0.get_potential_energy()),
            "dE_trapezoid": -0.5 * (f0 + f1) * dd,
            "dE_first_order": -f0 * dd,
            "wall_s": float(r.get("wall_s", 0.0)),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=[], help="LABEL=checkpoint (repeatable)")
    p.add_argument("--card", default="benchmarks/results/model.json", help="the shipped model's card JSON")
    p.add_argument("--labels", default="dft/labels.db")
    p.add_argument("--fd-db", default="dft/mm_check.db")
    p.add_argument(
        "--heldout",
        default="benchmarks/heldout_hosts.txt",
        help="hosts no model trained on (the held-out list)",
    )
    p.add_argument("--out", default="benchmarks/results/mm_bond.json")
    args = p.parse_args()
    import torch

    from potentials.calculator import BayesianCalculator

    warnings.filterwarnings("ignore", module="sevenn")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    models = dict(m.split("=", 1) for m in (args.model or ["v0.5.1=potentials/models/default.pt"]))
    shipped = next(iter(models))
    calcs = {k: BayesianCalculator(v) for k, v in models.items()}
    sevenn = sevenn_calculator()
    card = json.load(open(args.card))
    heldout = set(read_host_list(args.heldout)) if args.heldout else set()
    # held out: never trained by any model (the list); trained on: the shipped model's DFT training hosts;
    # labelled since: the other never-trained hosts of the card, which later candidates trained on
    role = {
        r["host"]: "held out"
        if r["host"] in heldout
        else ("trained on" if r["role"] == "trained on" else "labelled since")
        for r in card["dft"]
    }
    triples = [
        t for t in dft_triples(args.labels, SETTINGS, max_h_force=float("inf")) if t["geometry"] == "validate"
    ]
    structures: dict[str, dict] = {}
    host_atoms = {}
    for t in triples:
        host_atoms[t["host"]] = t["atoms"][0]
        for kind, a in (("host", t["atoms"][0]), ("host+H", t["atoms"][1])):
            key = t["host"] if kind == "host" else t["name"]
            if key in structures:
                continue
            i, j = metal_pair_indices(a)
            rec = {
                "host": t["host"],
                "kind": kind,
                "role": role.get(t["host"], "?"),
                "d": float(a.get_distance(i, j, mic=True)),
                "f_dft": bond_force(a, a.get_forces(), i, j),
            }
            for label, calc in calcs.items():
                b = a.copy()
                b.calc = calc
                rec[f"f_{label}"] = bond_force(b, b.get_forces(), i, j)
            rec["K_model"] = bond_stiffness(a, calcs[shipped], i, j)
            if sevenn is not None:
                b = a.copy()
                b.calc = sevenn
                rec["f_sevenn"] = bond_force(b, b.get_forces(), i, j)
                rec["K_sevenn"] = bond_stiffness(a, sevenn, i, j)
            structures[key] = rec
    fd = fd_stiffness(args.fd_db, host_atoms)
    ratio = [v["K"] / structures[h]["K_model"] for h, v in fd.items()]  # DFT K over the shipped model's

    force_table = {}
    for r_name in ("trained on", "labelled since", "held out"):
        for kind in ("host", "host+H"):
            s = [v for v in structures.values() if v["role"] == r_name and v["kind"] == kind]
            if not s:
                continue
            fd_ = np.array([v["f_dft"] for v in s])
            row = {
                "n": len(s),
                "mean_abs_dft": float(np.abs(fd_).mean()),
                "share_shorter": float((fd_ < 0).mean()),
            }
            for label in [*calcs, "sevenn"]:
                if f"f_{label}" in s[0]:
                    fm = np.array([v[f"f_{label}"] for v in s])
                    row[label] = {
                        "mean_abs": float(np.abs(fm).mean()),
                        "mae": float(np.abs(fm - fd_).mean()),
                        "pearson": float(np.corrcoef(fm, fd_)[0, 1]),
                    }
            force_table[f"{r_name} / {kind}"] = row

    rows = [
        r
        for r in card["dft"]
        if r["geometry"] == "validate" and r["role"] == "held out" and r["name"] in structures
    ]
    shift_summary = {}
    k_choices = {"K_model": 1.0, "K_sevenn": 1.0}
    # each finite difference's DFT/model stiffness ratio: a bracket, not one metal's K
    for h, v in fd.items():
        k_choices[f"K_model x DFT/model of {h}"] = v["K"] / structures[h]["K_model"]
    if len(ratio) > 1:
        k_choices["K_model x mean DFT/model"] = float(np.mean(ratio))
    for label, scale in k_choices.items():
        kname = "K_sevenn" if label == "K_sevenn" else "K_model"
        if kname not in structures[rows[0]["name"]]:
            continue
        shifted = []
        for r in rows:
            h, s = structures[r["host"]], structures[r["name"]]
            sh = delta_e_h_shift(h["f_dft"], scale * h[kname], s["f_dft"], scale * s[kname])
            shifted.append({**r, "shift": sh, "dft_de": r["dft_de"] + sh})
        err = np.array([r["model_de"] - r["dft_de"] for r in rows])
        err_s = np.array([r["model_de"] - r["dft_de"] for r in shifted])
        sh = np.array([r["shift"] for r in shifted])
        shift_summary[label] = {
            "k_scale": scale,
            "mean_shift": float(sh.mean()),
            "mean_abs_shift": float(np.abs(sh).mean()),
            "max_abs_shift": float(np.abs(sh).max()),
            "pearson_error_vs_shift": float(np.corrcoef(err, -sh)[0, 1]),
            "structure_mae": float(np.abs(err).mean()),
            "structure_mae_shifted": float(np.abs(err_s).mean()),
            "host_mae": _host_mae(rows, "model_de"),
            "host_mae_shifted": _host_mae(shifted, "model_de"),
            "sevenn_host_mae": _host_mae(rows, "sevenn_de"),
            "sevenn_host_mae_shifted": _host_mae(shifted, "sevenn_de"),
            "per_structure": {r["name"]: r["shift"] for r in shifted},
        }
    result = {
        "command": "python benchmarks/mm_bond_bias.py "
        + " ".join(f"--model {k}={v}" for k, v in models.items())
        + f" --fd-db {args.fd_db}",
        "date": time.strftime("%Y-%m-%d"),
        "models": models,
        "n_structures": len(structures),
        "n_heldout_triples": len(rows),
        "forces": force_table,
        "fd_check": fd,
        "k_dft_over_model": ratio,
        "shift": shift_summary,
        "structures": structures,
        "wall_s": time.perf_counter() - t0,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".tmp", "w") as fh:
        json.dump(result, fh, indent=1)
    os.replace(args.out + ".tmp", args.out)

    print(f"{len(structures)} structures at model-relaxed geometries, {len(rows)} held-out triples")
    print("\n| role / state | n | mean abs DFT f (eV/Å) | DFT wants shorter | " + " | ".join(
        f"{m}: mean abs f, MAE, r" for m in [*calcs, "sevenn"]) + " |")  # fmt: skip
    print("|---|---|---|---|" + "---|" * (len(calcs) + 1))
    for k, v in force_table.items():
        cells = [
            f"{v[m]['mean_abs']:.2f}, {v[m]['mae']:.2f}, {v[m]['pearson']:+.2f}" if m in v else "-"
            for m in [*calcs, "sevenn"]
        ]
        print(
            f"| {k} | {v['n']} | {v['mean_abs_dft']:.2f} | {v['share_shorter']:.0%} | "
            + " | ".join(cells)
            + " |"
        )
    for h, v in fd.items():
        print(
            f"\nDFT finite difference on {h}: d {v['dd']:+.3f} Å, bond force {v['f0']:+.2f} -> {v['f1']:+.2f} eV/Å, "
            f"K {v['K']:.1f} eV/Å² (model {structures[h]['K_model']:.1f}, SevenNet-0 "
            f"{structures[h].get('K_sevenn', float('nan')):.1f}); ΔE {v['dE']:+.3f} eV against trapezoid "
            f"{v['dE_trapezoid']:+.3f} and first order {v['dE_first_order']:+.3f}"
        )
    print(
        "\n| K used | mean shift | mean abs shift | max abs | r(error, −shift) | MAE per structure | per host | SevenNet-0 per host |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for k, v in shift_summary.items():
        print(
            f"| {k} (x{v['k_scale']:.2f}) | {v['mean_shift']:+.3f} | {v['mean_abs_shift']:.3f} | {v['max_abs_shift']:.3f} | "
            f"{v['pearson_error_vs_shift']:+.2f} | {v['structure_mae']:.3f} → {v['structure_mae_shifted']:.3f} | "
            f"{v['host_mae']:.3f} → {v['host_mae_shifted']:.3f} | {v['sevenn_host_mae']:.3f} → "
            f"{v['sevenn_host_mae_shifted']:.3f} |"
        )
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
