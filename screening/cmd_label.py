"""``screen label``: label structures with a reference calculator into a resumable ASE database.

Examples::

    screen label --engine gpaw --hosts Fe,Ni --motifs 6Na --supercell 4x4 --with-h --sites top_M1 --h2 \
        --db dft/labels.db
    screen label --engine emt --in structures.extxyz --db labels.db --workers 2
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        default="gpaw",
        help="gpaw (plane-wave PBE) | sevenn (SevenNet-0) | emt | ase:<module>:<Class> (default gpaw)",
    )
    src = parser.add_argument_group("what to label (--in, or a generated catalogue)")
    src.add_argument(
        "--in", dest="inputs", nargs="+", default=None, help="ASE-readable structure files (all frames)"
    )
    src.add_argument(
        "--hosts", default=None, help="metals of the generated hosts: all or a comma list, e.g. Fe,Ni"
    )
    src.add_argument(
        "--motifs", default="6Na", help="motifs: all, a comma list (e.g. 6Na,4Na) or a motif file"
    )
    src.add_argument("--pairs", default="homo", help="homo (M2) or hetero (M1M2) metal pairs (default homo)")
    src.add_argument(
        "--supercell", default="4x4", help="graphene supercell preset: 4x4 (30 atoms) or 2r7 (default 4x4)"
    )
    src.add_argument("--with-h", action="store_true", help="also label the H* states of each host")
    src.add_argument(
        "--sites", default=None, help="H* site labels to keep, e.g. top_M1 (default: all distinct sites)"
    )
    src.add_argument(
        "--h2", action="store_true", help="also label the H2 reference molecule in a box (first)"
    )
    src.add_argument("--order", default="motif", help="motif (motifs outer, default) or metal (metals outer)")
    out = parser.add_argument_group("store and execution")
    out.add_argument(
        "--db", default="dft/labels.db", help="label database (ASE SQLite; default dft/labels.db)"
    )
    out.add_argument("--workers", type=int, default=1, help="processes, one core each (default 1)")
    out.add_argument(
        "--max", dest="max_labels", type=int, default=None, help="label at most N new structures"
    )
    out.add_argument("--retry-failed", action="store_true", help="recompute rows flagged non-converged")
    out.add_argument("--log-dir", default=None, help="folder for DFT text logs (default: <db folder>/logs)")
    out.add_argument(
        "--readme",
        default=None,
        help="keep a README summarising the database up to date (rewritten after every label)",
    )
    out.add_argument(
        "--export", default=None, help="then export converged labels of these settings to this extxyz"
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_settings_arguments(parser)


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The shared reference-settings options of ``screen label`` and ``screen data`` (stdlib only)."""
    g = parser.add_argument_group("reference settings (DFT engines)")
    g.add_argument(
        "--preset",
        default="pw500",  # screening.labelling.DEFAULT_PRESET (this module imports nothing heavy)
        help="settings preset: pw500, pw400, pw500k4, pw600 or fast (default pw500)",
    )
    g.add_argument("--ecut", type=float, default=None, help="plane-wave cutoff, eV (pw500: 500)")
    g.add_argument(
        "--kdens", type=float, default=None, help="k-point density, points per 1/Å (pw500: 3.5 -> 3x3x1)"
    )
    g.add_argument("--kpts", default=None, help="explicit k-point grid, e.g. 3x3x1 (overrides --kdens)")
    g.add_argument("--smearing", type=float, default=None, help="Fermi-Dirac width, eV (default 0.1)")
    g.add_argument("--maxiter", type=int, default=None, help="SCF iterations per attempt (default 60)")
    g.add_argument("--xc", default=None, help="exchange-correlation functional (default PBE)")
    g.add_argument("--no-spin", action="store_true", help="spin-paired calculation (default: spin-polarised)")
    g.add_argument("--stress", action="store_true", help="also compute the stress tensor")
    g.add_argument("--model", default=None, help="SevenNet model name for --engine sevenn (default 7net-0)")
    g.add_argument(
        "--calc-kwargs", default=None, help="JSON keyword arguments for --engine ase:<module>:<Class>"
    )


def gather(args: argparse.Namespace) -> list:
    """The structures to label, from --in files or the generated catalogue (plus H2 with --h2)."""
    from screening import labelling as L
    from structures.common import InputError

    if args.inputs and args.hosts:
        raise InputError("give either --in FILES or --hosts METALS, not both")
    if args.inputs:
        frames = L.read_structures(args.inputs)
        return ([L.h2_reference()] if args.h2 else []) + frames
    if not args.hosts:
        if args.h2:
            return [L.h2_reference()]
        raise InputError("nothing to label; allowed: --in FILES, --hosts METALS (e.g. Fe,Ni) or --h2")
    from structures.metals import resolve_metals
    from structures.motifs import resolve_motifs

    sites = [s.strip() for s in args.sites.split(",") if s.strip()] if args.sites else None
    return L.build_queue(
        resolve_metals(args.hosts),
        resolve_motifs(args.motifs),
        pairs=args.pairs,
        supercell=args.supercell,
        with_h=args.with_h or bool(sites),
        sites=sites,
        h2=args.h2,
        order=args.order,
    )


def run(args: argparse.Namespace) -> int:
    from screening import labelling as L

    engine = L.get_engine(args.engine)
    settings = L.settings_from_args(args)
    structures = gather(args)
    rep = L.label_structures(
        structures,
        engine,
        settings,
        args.db,
        workers=args.workers,
        progress=not args.no_progress,
        max_labels=args.max_labels,
        retry_failed=args.retry_failed,
        log_dir=args.log_dir,
        on_row=(lambda key, res: L.write_readme(args.db, args.readme)) if args.readme else None,
    )
    print(
        f"{rep.total} structures: {rep.skipped} already labelled, {rep.labelled} labelled now "
        f"({rep.converged} converged, {rep.failed} flagged), {rep.core_s / 3600:.3f} core-hours -> {args.db}"
    )
    if args.readme:
        L.write_readme(args.db, args.readme)
    if args.export:
        n = L.export_training_set(
            args.db, args.export, engine=engine.name, settings_hash=L.settings_hash(engine, settings)
        )
        print(f"exported {n} converged labels -> {args.export}")
    return 0
