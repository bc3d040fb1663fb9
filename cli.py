"""The ``screen`` command: a thin dispatcher, one module per command.

Command modules import nothing heavy at module level (only argparse/stdlib), so ``screen --help``
answers instantly; each exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

__version__ = "0.1.0"

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "motifs": ("structures.cmd_motifs", "list the nitrogen motifs of the dual-metal pocket"),
    "structures": ("structures.cmd_structures", "write TM2@Nx-graphene hosts and H* structures"),
    "data": ("screening.cmd_data", "build a labelled training set for TM2@N-graphene"),
    "label": ("screening.cmd_label", "label structures with a reference calculator (GPAW, SevenNet-0, ...)"),
    "import": ("screening.cmd_import", "import finished VASP / QE outputs as labels"),
    "train": ("potentials.cmd_train", "train (or fine-tune) a Bayesian potential"),
    "anchor": ("screening.cmd_anchor", "anchor a model's ΔGH* to DFT labels (offset + leave-one-host-out σ)"),
    "learn": ("potentials.cmd_learn", "active learning loop (BALD / random / energy uncertainty)"),
    "run": ("screening.cmd_run", "relax hosts and H* states, compute ΔGH* with uncertainty"),
    "report": ("reports.cmd_report", "ranking tables, figures and an HTML report from a results database"),
    "export": ("reports.cmd_export", "write DFT inputs (VASP / QE / GPAW / extxyz) for selected candidates"),
    "validate": ("reports.cmd_validate", "run real DFT single points on selected candidates"),
    "bench": ("screening.cmd_bench", "run a benchmark and record it in BENCHMARKS.md"),
}


def _load(name: str):
    module, _ = COMMANDS[name]
    return importlib.import_module(module)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="screen",
        description="Uncertainty-aware high-throughput screening of dual-atom electrocatalysts (TM2@Nx-graphene).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from structures.common import register_subcommands

    register_subcommands(sub, COMMANDS, "_run", "_missing")
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's time limit, ``kill``), raised in the main thread so a command stops the
    way it does on Ctrl-C: finished rows stay, SCF checkpoints are kept, worker processes are stopped."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "_missing", None):
        print(f"screen: error: command '{args.command}' is not available in this build", file=sys.stderr)
        return 2
    from structures.common import InputError

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    try:
        rc = args._run(args)
    except InputError as exc:
        msg = " ".join(str(exc).split("\n"))
        print(f"screen {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(
            f"screen {args.command}: {how}; finished work is saved, re-run the same command to resume",
            file=sys.stderr,
        )
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if in_main and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
