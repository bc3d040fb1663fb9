"""``screen motifs``: the motif catalogue as a table (optionally the picture sheet)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", action="store_true", help="include k = 0, 1 and 6 (outside `--motifs all`)")
    parser.add_argument(
        "--sheet", metavar="PNG", help="also draw the picture sheet of all motifs to this file"
    )


def run(args: argparse.Namespace) -> int:
    from .motifs import MOTIF_KS_ALL, catalogue

    motifs = [m for m in catalogue() if args.all or m.k in MOTIF_KS_ALL]
    print(f"{'name':6} {'k':>2} {'N sites':14} {'mult':>4}  description")
    for m in motifs:
        sites = ",".join(map(str, m.n_sites)) or "-"
        print(f"{m.name:6} {m.k:>2} {sites:14} {m.multiplicity:>4}  {m.description}")
    print(f"{len(motifs)} motifs" + ("" if args.all else " (`--motifs all`; add --all for k = 0, 1, 6)"))
    if args.sheet:
        from .sheet import draw_motif_sheet

        draw_motif_sheet(args.sheet)
        print(f"picture sheet written to {args.sheet}")
    return 0
