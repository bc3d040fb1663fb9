"""``screen structures``: write hosts and H* states to extxyz, an ASE database or VASP POSCARs."""

from __future__ import annotations

import argparse

FORMATS = ("extxyz", "db", "vasp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metals", default="all", help="all or a comma list, e.g. Fe,Co (default: all)")
    parser.add_argument(
        "--motifs", default="all", help="all, a comma list (2Na,3Nb) or motif files (default: all)"
    )
    parser.add_argument(
        "--pairs", default="homo", help="homo (M2) or hetero (every M1M2 pair) (default: homo)"
    )
    parser.add_argument(
        "--supercell", default="2r7", help="2r7 (52-atom framework, default), 4x4 (30-atom DFT cell), 5x5"
    )
    parser.add_argument("--no-h", action="store_true", help="hosts only, no H* states")
    parser.add_argument("--out", required=True, help="output folder (must be new or empty unless --force)")
    parser.add_argument("--format", default="extxyz", help=f"one of {', '.join(FORMATS)} (default: extxyz)")
    parser.add_argument(
        "--force", action="store_true", help="write into a non-empty folder, replacing our files"
    )


def run(args: argparse.Namespace) -> int:
    from .common import InputError
    from .enumerate import PAIRS, count_structures
    from .host import SUPERCELLS
    from .metals import resolve_metals
    from .motifs import resolve_motifs
    from .writers import write_structures

    metals = resolve_metals(args.metals)
    motifs = resolve_motifs(args.motifs)
    if args.format not in FORMATS:
        raise InputError(f"unknown format {args.format!r}; allowed: {', '.join(FORMATS)}")
    if args.pairs not in PAIRS:
        raise InputError(f"unknown pair mode {args.pairs!r}; allowed: {', '.join(PAIRS)}")
    if args.supercell not in SUPERCELLS:
        raise InputError(f"unknown supercell {args.supercell!r}; allowed: {', '.join(SUPERCELLS)}")
    if args.pairs == "hetero" and len(metals) < 2:
        raise InputError(f"--pairs hetero needs at least two metals, got {','.join(metals)}")
    total = count_structures(metals, motifs, args.pairs, not args.no_h)
    path = write_structures(
        args.out,
        metals,
        motifs,
        fmt=args.format,
        pairs=args.pairs,
        with_h=not args.no_h,
        supercell=args.supercell,
        force=args.force,
        total=total,
    )
    print(f"wrote {total} structures ({args.format}) to {path}")
    return 0
