"""Compare two full screens host by host (issue 10: is a re-trained network safe to ship?).

Prints, for the ΔGH* and the formation energy E_f of the hosts both stores finished: the median of each,
the mean absolute change, the Spearman rank correlation, how many hosts each flags `aggregates`, and how
many best sites sit on a metal. Energies in eV.

    python benchmarks/compare_screens.py runs/screen4/results.db runs/screen6/results.db [HASH_A [HASH_B]]

A hash may name the settings too, MODEL_HASH/SETTINGS_HASH, for a store that holds one model's rows under
several settings (e.g. runs/screen7: mf1f0d8beecbfac41/sac5fe908216b3a49).
"""

from __future__ import annotations

import json
import sys

import numpy as np
from scipy.stats import spearmanr

from screening.store import load_results


def compare(db_a: str, db_b: str, hash_a: str | None = None, hash_b: str | None = None) -> dict:
    def read(db: str, spec: str | None):
        model, _, settings = (spec or "").partition("/")
        return load_results(db, model_hash=model or None, settings_hash=settings or None).set_index("host")

    a, b = read(db_a, hash_a), read(db_b, hash_b)
    for name, df in (("A", a), ("B", b)):
        if df.index.has_duplicates:
            raise SystemExit(
                f"store {name} holds several runs' rows: name them, MODEL_HASH[/SETTINGS_HASH] (a third and "
                "fourth argument)"
            )
    both = a.index.intersection(b.index)
    a, b = a.loc[both], b.loc[both]
    out: dict = {"hosts": len(both)}
    for col in ("dg", "e_form"):
        x, y = a[col].astype(float).to_numpy(), b[col].astype(float).to_numpy()
        ok = np.isfinite(x) & np.isfinite(y)
        out[col] = {
            "median_a": float(np.median(x[ok])),
            "median_b": float(np.median(y[ok])),
            "mean_abs_change": float(np.mean(np.abs(y[ok] - x[ok]))),
            "spearman": float(spearmanr(x[ok], y[ok]).statistic),
            "n": int(ok.sum()),
        }
    for col in ("e_form_std", "dg_std"):
        out[col + "_median"] = [float(np.nanmedian(a[col])), float(np.nanmedian(b[col]))]
    out["aggregates"] = [
        int(a["flag_aggregates"].astype(bool).sum()),
        int(b["flag_aggregates"].astype(bool).sum()),
    ]
    out["best_site_metal"] = [
        int((a["best_site_class"] == "metal").sum()),
        int((b["best_site_class"] == "metal").sum()),
    ]
    out["model_hash"] = [str(a["model_hash"].iloc[0]), str(b["model_hash"].iloc[0])]
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(compare(*args[:2], *(args[2:4] + [None, None])[:2]), indent=1))
