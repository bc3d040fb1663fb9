"""Load test: a screen of N structures (default 5,000) with a cheap analytic posterior, in bounded memory.

    python benchmarks/load_test.py --structures 5000 --db /tmp/load5000.db

Heteronuclear pairs of ten metals in every motif (4x4 supercell), relaxed with the Morse-ensemble
posterior of ``screening.testing`` (K = 4 samples) so that the run takes minutes on a CPU; the store,
the batch queue, the executors and the ΔGH* stage are the real ones. Reports wall time, peak RSS
(``ru_maxrss``), the RSS after start-up (imports + selection) and the rows written, checks that every
structure was written exactly once, and merges the record into ``benchmarks/results/load.json`` (keyed by
size and executor). Run each size in its own process so that peaks do not mix.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
METALS = ("Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zr", "Nb")
ELEMENTS = ("H", "C", "N", *METALS)


def rss_mb() -> float:
    """Current resident set size (MB) from /proc (0 where unavailable)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB; Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def posterior_loader():
    """A picklable loader (joblib / Dask workers import screening.testing, not this script)."""
    from screening.testing import MorseConfig, MorseEnsemble

    return functools.partial(MorseEnsemble, ELEMENTS, MorseConfig(n_members=4))


def load_config(n_structures: int, max_steps: int = 30, batch_size: int = 64, **overrides: Any):
    """A ScreenConfig whose selection holds at least ``n_structures`` structures (whole hosts)."""
    from screening.pipeline import ScreenConfig
    from screening.relax import RelaxConfig
    from structures.enumerate import iter_structures
    from structures.metals import resolve_metals
    from structures.motifs import resolve_motifs

    hosts = count = 0
    for atoms in iter_structures(resolve_metals(list(METALS)), resolve_motifs("all"), "hetero", True, "4x4"):
        if atoms.info.get("site") in (None, ""):
            if count >= n_structures:
                break
            hosts += 1
        count += 1
    relax = RelaxConfig(max_steps=max_steps, batch_size=batch_size)
    return ScreenConfig(
        metals=",".join(METALS), motifs="all", pairs="hetero", supercell="4x4", limit=hosts, relax=relax,
        progress=False, **overrides,
    )  # fmt: skip


def check_rows(db: str | os.PathLike, n_structures: int, n_hosts: int) -> dict[str, int]:
    """Every structure exactly once (initial + relaxed), one ΔG row per host, SQLite integrity."""
    import sqlite3

    import ase.db

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()
    states: dict[str, list[str]] = {}
    n_dg = n_ref = 0
    for row in ase.db.connect(str(db)).select(include_data=False):
        if row.kind == "structure":
            states.setdefault(row.uid, []).append(row.state)
        n_dg += row.kind == "dg"
        n_ref += row.kind == "reference"
    whole = sum(sorted(s) == ["initial", "relaxed"] for s in states.values())
    assert integrity == "ok", integrity
    assert len(states) == whole == n_structures, (len(states), whole, n_structures)
    assert n_dg == n_hosts, (n_dg, n_hosts)
    return {"structures": len(states), "dg_rows": n_dg, "reference_rows": n_ref}


def run_load(
    n_structures: int,
    db: str | os.PathLike,
    max_steps: int = 30,
    batch_size: int = 64,
    workers: int = 1,
    scheduler: str | None = None,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Run (or resume) the load screen into ``db``; returns the measured figures."""
    import torch

    from screening.pipeline import handle_from_loader, run_screen

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    config = load_config(
        n_structures, max_steps, batch_size, workers=workers, scheduler=scheduler, chunk_size=chunk_size
    )
    handle = handle_from_loader(posterior_loader())
    rss_start = rss_mb()
    summary = run_screen(config, db, model=handle)
    wall = time.perf_counter() - t0
    rows = check_rows(db, summary.n_structures, summary.n_hosts)
    return {
        "n_structures": summary.n_structures,
        "n_hosts": summary.n_hosts,
        "n_relaxed_now": summary.n_relaxed,
        "n_evaluations": summary.n_evaluations,
        "executor": "dask" if scheduler else ("joblib" if workers > 1 else "serial"),
        "workers": workers,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "wall_s": round(wall, 1),
        "relax_wall_s": round(summary.relax_wall_s, 1),
        "structures_per_s": round(summary.n_structures / wall, 2),
        "rss_after_startup_mb": round(rss_start, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "db_size_mb": round(Path(db).stat().st_size / 2**20, 1),
        "status_counts": summary.status_counts,
        **rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", type=int, default=5000)
    parser.add_argument("--db", required=True, help="results database (a new file for a clean measurement)")
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load.json"))
    parser.add_argument("--no-record", action="store_true", help="print only, do not update --out")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from structures.common import atomic_write_text, hardware_summary

    result = run_load(args.structures, args.db, args.max_steps, args.batch_size, args.workers)
    result["command"] = "python benchmarks/load_test.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    result["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    result["hardware"] = hardware_summary()
    print(json.dumps(result, indent=2))
    if not args.no_record:
        out = Path(args.out)
        records = json.loads(out.read_text()) if out.exists() else {"name": "load", "runs": {}}
        records["runs"][f"{result['n_structures']}-{result['executor']}"] = result
        atomic_write_text(out, json.dumps(records, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
