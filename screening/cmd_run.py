"""``screen run``: relax hosts and H* states; ΔGH* with uncertainty, stability and flags (resumable)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metals", default="all", help="'all' or a comma list such as Fe,Co (default: all)")
    parser.add_argument(
        "--motifs", default="all", help="'all', a comma list such as 2Na,3Nb, or a motif file (default: all)"
    )
    parser.add_argument(
        "--pairs", default="homo", choices=("homo", "hetero"), help="metal pairs (default: homo)"
    )
    parser.add_argument(
        "--supercell",
        default="4x4",
        help="host supercell preset: 4x4 (30 atoms, the cell of the DFT labels) or 2r7 (54 atoms) (default: 4x4)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="posterior checkpoint (default: the embedded potentials/models/default.pt)",
    )
    parser.add_argument(
        "--db", default="results.db", help="results database, ASE SQLite (default: results.db)"
    )
    parser.add_argument("--fmax", type=float, default=0.05, help="force convergence, eV/Å (default: 0.05)")
    parser.add_argument("--max-steps", type=int, default=300, help="FIRE steps per structure (default: 300)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="structures relaxed together (default: 32 on a CPU, 512 on a GPU, where a batch of 512 relaxes "
        "4.4x faster than one of 32: BENCHMARKS.md screen_cuda)",
    )
    parser.add_argument(
        "--samples", type=int, default=None, help="posterior samples K for σ (default: the method's)"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    parser.add_argument(
        "--workers", type=int, default=1, help="joblib worker processes on this machine (default: 1)"
    )
    parser.add_argument(
        "--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786 (optional extra)"
    )
    parser.add_argument(
        "--correction", type=float, default=0.24, help="ΔZPE − TΔS in eV (default: 0.24, Nørskov 2005)"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N hosts of the selection")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="structures per executor task (default: one stream when serial, ~4 tasks per worker)",
    )
    parser.add_argument(
        "--max-sigma",
        type=float,
        default=0.15,
        help="σ(ΔGH*) above this flags high_variance, eV (default: 0.15)",
    )
    parser.add_argument(
        "--max-formation-energy",
        type=float,
        default=0.0,
        help="E_f above this flags 'aggregates', eV (default: 0.0)",
    )
    parser.add_argument("--top", type=int, default=10, help="rows of the summary table (default: 10)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    """ScreenConfig from parsed arguments."""
    from dataclasses import replace

    from .dgh import DGConfig
    from .flags import FlagConfig
    from .pipeline import ScreenConfig
    from .relax import RelaxConfig
    from .stability import StabilityConfig

    batch_size = args.batch_size
    if batch_size is None:
        from .relax import default_batch_size, resolve_device

        batch_size = default_batch_size(resolve_device(args.device))
    return ScreenConfig(
        metals=args.metals,
        motifs=args.motifs,
        pairs=args.pairs,
        supercell=args.supercell,
        limit=args.limit,
        relax=replace(RelaxConfig(), fmax=args.fmax, max_steps=args.max_steps, batch_size=batch_size),
        dg=DGConfig(correction=args.correction, n_samples=args.samples),
        stability=replace(StabilityConfig(), max_formation_energy=args.max_formation_energy),
        flags=replace(FlagConfig(), max_sigma=args.max_sigma),
        device=args.device,
        workers=args.workers,
        scheduler=args.scheduler,
        chunk_size=args.chunk_size,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from .pipeline import run_screen

    run_screen(config_from_args(args), args.db, model_path=args.model, out=sys.stdout, top=args.top)
    return 0
