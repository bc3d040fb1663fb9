"""Does the DFT-anchored network inherit its pre-training teacher's errors, and would another teacher differ?

For every plane-wave DFT triple (host, host+H, H2) in the label store, ΔE_H of universal potentials whose wheels
carry their weights (SevenNet-0, SevenNet-l3i5, CHGNet 0.3.0: ``pip install chgnet``; a missing one is skipped)
at the DFT geometries, their errors against DFT, and the shipped model's error on the same triples (from a
``screen bench anchor`` result file, variant ``base``). Prints per predictor the MAE, mean error and slope against
DFT (below 1: the range of ΔE_H is compressed) on the held-out triples and on the others (hosts outside
benchmarks/heldout_hosts.txt, which the DFT fine-tunings train on), the Pearson correlation between the errors
of every two of them, and the MAE of the teachers' mean. A network fine-tuned on DFT whose held-out errors correlate strongly with its
teacher's still carries the teacher's host-to-host pattern; a second teacher with uncorrelated errors is then
worth pre-training on.

Usage: python benchmarks/teacher_errors.py [labels.db] [settings_hash] [anchor.json] [out.json]
  (defaults: dft/labels.db 8105ed16eae5 benchmarks/results/anchor_s17_v051.json
   benchmarks/results/teacher_errors.json)
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import numpy as np

from screening.bench_model import calc_triple_de, dft_triples
from structures.common import read_host_list


def _num(v: float | None, sign: str = "") -> str:
    """'' for a missing figure, else three decimals (``sign='+'``: always signed)."""
    return "" if v is None else f"{v:{sign}.3f}"


def teachers() -> dict:
    """name -> ASE calculator of every universal potential that imports here (CPU)."""
    out = {}
    try:
        from sevenn.calculator import SevenNetCalculator

        out["SevenNet-0"] = SevenNetCalculator("7net-0", device="cpu")
        out["SevenNet-l3i5"] = SevenNetCalculator("7net-l3i5", device="cpu")
    except ImportError:
        print("sevenn not installed: SevenNet columns skipped")
    try:
        from chgnet.model.dynamics import CHGNetCalculator

        out["CHGNet"] = CHGNetCalculator(use_device="cpu")
    except ImportError:
        print("chgnet not installed (pip install chgnet): CHGNet column skipped")
    return out


def model_errors(anchor_json: str) -> dict[tuple[str, float], float]:
    """(structure name, DFT ΔE_H rounded to 1 meV) -> the anchor file's ``base`` ΔE_H (eV)."""
    data = json.load(open(anchor_json))
    return {
        (r["name"], round(r["dft_de"], 3)): r["base"] for r in data["test"] + data["train"] if "base" in r
    }


def main(labels: str, settings_hash: str, anchor_json: str, out_json: str) -> None:
    warnings.filterwarnings("ignore", category=UserWarning)
    heldout = set(read_host_list("benchmarks/heldout_hosts.txt"))
    triples = dft_triples(labels, settings_hash)
    model = model_errors(anchor_json)
    calcs = teachers()
    rows = []
    t0 = time.perf_counter()
    for t in triples:
        row = {
            "name": t["name"],
            "host": t["host"],
            "geometry": t["geometry"],
            "heldout": t["host"] in heldout,
            "dft_de": t["dft_de"],
        }
        m = model.get((t["name"], round(t["dft_de"], 3)))
        if m is not None:
            row["v0.5.1"] = m
        for name, calc in calcs.items():
            row[name] = float(calc_triple_de(calc, t["atoms"]))
        rows.append(row)
    print(f"{len(rows)} DFT triples, {len(calcs)} teachers, {time.perf_counter() - t0:.0f} s")
    names = ["v0.5.1", *calcs]
    if len(calcs) > 1:
        for r in rows:
            r["teachers' mean"] = float(np.mean([r[n] for n in calcs]))
        names.append("teachers' mean")
    summary: dict = {}
    print(
        "\n| predictor | held-out n | MAE (eV) | mean error | slope vs DFT | DFT-training n | MAE | mean error "
        "| slope vs DFT |\n|---|---|---|---|---|---|---|---|---|"
    )
    for n in names:
        s = {}
        for part, sel in (("heldout", True), ("train", False)):
            pick = [r for r in rows if r["heldout"] == sel and n in r]
            x = np.array([r["dft_de"] for r in pick])
            e = np.array([r[n] for r in pick]) - x
            s[part] = {
                "n": int(e.size),
                "mae": float(np.abs(e).mean()) if e.size else None,
                "mean": float(e.mean()) if e.size else None,
                # slope of the prediction against DFT: < 1 compresses the range of ΔE_H
                "slope": float(np.polyfit(x, e + x, 1)[0]) if e.size > 2 else None,
            }
        summary[n] = s
        cells = [
            f"{s[p]['n']} | {_num(s[p]['mae'])} | {_num(s[p]['mean'], '+')} | {_num(s[p]['slope'])}"
            for p in s
        ]
        print(f"| {n} | " + " | ".join(cells) + " |")
    corr: dict = {}
    print(
        "\nPearson correlation of the errors (held-out triples; the v0.5.1 column only where it was evaluated):"
    )
    print("\n| | " + " | ".join(names) + " |\n|" + "---|" * (len(names) + 1))
    for a in names:
        cells = []
        for b in names:
            both = [r for r in rows if r["heldout"] and a in r and b in r]
            if len(both) < 3:
                cells.append("")
                continue
            ea = [r[a] - r["dft_de"] for r in both]
            eb = [r[b] - r["dft_de"] for r in both]
            c = float(np.corrcoef(ea, eb)[0, 1])
            corr[f"{a}|{b}"] = c
            cells.append(f"{c:.2f}")
        print(f"| {a} | " + " | ".join(cells) + " |")
    json.dump(
        {
            "labels": labels,
            "settings_hash": settings_hash,
            "anchor": anchor_json,
            "rows": rows,
            "summary": summary,
            "corr_heldout": corr,
        },
        open(out_json, "w"),
        indent=1,
    )
    print(f"\n-> {out_json}")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(
        a[0] if len(a) > 0 else "dft/labels.db",
        a[1] if len(a) > 1 else "8105ed16eae5",
        a[2] if len(a) > 2 else "benchmarks/results/anchor_s17_v051.json",
        a[3] if len(a) > 3 else "benchmarks/results/teacher_errors.json",
    )
