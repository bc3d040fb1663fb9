"""``screen bench structures``: wall time to enumerate and write the whole catalogue."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", default="homo", help="homo or hetero (default homo)")
    parser.add_argument("--repeats", type=int, default=3)


def run(args: argparse.Namespace) -> int:
    import shutil
    import tempfile
    import time

    from .common import write_bench_result
    from .enumerate import count_structures
    from .metals import METALS
    from .motifs import resolve_motifs
    from .writers import write_structures

    motifs = resolve_motifs("all")
    n = count_structures(METALS, motifs, args.pairs)
    rows = []
    for fmt in ("extxyz", "db", "vasp"):
        times = []
        for _ in range(args.repeats):
            tmp = tempfile.mkdtemp()
            t0 = time.perf_counter()
            write_structures(f"{tmp}/out", METALS, motifs, fmt=fmt, pairs=args.pairs, total=n)
            times.append(time.perf_counter() - t0)
            shutil.rmtree(tmp)
        rows.append(
            {"format": fmt, "structures": n, "best_s": min(times), "median_s": sorted(times)[len(times) // 2]}
        )
    table = "| format | structures | best (s) | median (s) | target |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {r['format']} | {r['structures']} | {r['best_s']:.2f} | {r['median_s']:.2f} | < 60 s |"
        for r in rows
    )
    cmd = f"screen bench structures --pairs {args.pairs} --repeats {args.repeats}"
    write_bench_result("structures", {"rows": rows, "hosts": len(METALS) * len(motifs)}, cmd, table)
    print(table)
    return 0
