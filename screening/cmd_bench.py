"""``screen bench NAME``: run one benchmark, write benchmarks/results/NAME.json and its BENCHMARKS.md section."""

from __future__ import annotations

import argparse

# benchmark name -> module exposing add_arguments(parser) and run(args) -> int
BENCHES: dict[str, tuple[str, str]] = {
    "structures": ("structures.bench", "time to write every host and H* structure of the full catalogue"),
    "potential": ("potentials.bench_potential", "accuracy on acac and CPU speed vs SevenNet-0"),
    "uq": ("potentials.bench_uq", "Bayesian methods: calibration and OOD detection on acac"),
    "al": ("potentials.bench_al", "active learning curves: BALD vs random vs energy uncertainty"),
    "screen": ("screening.bench_screen", "throughput of the full screen and ΔGH* accuracy"),
    "model": ("screening.bench_model", "model card: held-out errors, calibration and ΔE_H against DFT"),
    "heldout": ("screening.bench_heldout", "ΔGH* against the reference on hosts the model never saw"),
    "anchor": (
        "screening.bench_anchor",
        "DFT-anchored model: fine-tuned on plane-wave labels, held-out hosts",
    ),
    "dft": ("screening.bench_dft", "DFT settings convergence and ΔGH* against plane-wave DFT"),
    "dft-al": (
        "screening.bench_dft_al",
        "DFT core-hours saved by uncertainty-driven labelling (retrospective)",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    from structures.common import register_subcommands

    register_subcommands(sub, BENCHES, "_bench_run", "_bench_missing")


def run(args: argparse.Namespace) -> int:
    from structures.common import InputError

    if getattr(args, "_bench_missing", None):
        raise InputError(f"benchmark '{args.bench}' is not available in this build")
    return int(args._bench_run(args) or 0)
