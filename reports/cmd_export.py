"""``screen export --db results.db --select uncertain|top:N|id:HOST[,HOST] --format vasp|qe|gpaw|extxyz
--out dft/ [--force] [--site-classes metal,N,C]``: DFT inputs for the selected candidates and a manifest."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="results database written by `screen run` (.db)")
    parser.add_argument(
        "--select",
        default="uncertain",
        help="uncertain (2σ interval crosses the ±0.2 eV window or high_variance flag), bald (largest "
        "information gain ½ln(1+σ_ep²/σ_al²) first), bald:per-metal (the best of each metal pair), random, "
        "random:per-metal (one host per pair, seeded), top:N, flag:NAME (hosts carrying that flag, e.g. "
        "flag:pair_stretched), id:HOST[,HOST] or all (default uncertain)",
    )
    parser.add_argument(
        "--exclude-hosts",
        default=None,
        help="hosts never selected: comma list or file (e.g. benchmarks/heldout_hosts.txt)",
    )
    parser.add_argument("--max", type=int, default=None, help="at most this many candidates")
    parser.add_argument("--format", default="vasp", help="vasp, qe, gpaw or extxyz (default vasp)")
    parser.add_argument("--out", required=True, help="output folder (new or empty unless --force)")
    parser.add_argument("--task", default="relax", help="relax or scf (default relax)")
    parser.add_argument(
        "--preset", default="pw500", help="DFT settings preset of `screen label` (default pw500)"
    )
    parser.add_argument(
        "--pseudo", default=None, help="QE pseudopotential file pattern (default {symbol}.pbe.UPF)"
    )
    parser.add_argument(
        "--force", action="store_true", help="write into a non-empty --out, replacing same-named entries"
    )
    parser.add_argument(
        "--site-classes",
        default="",
        help="also write each host's lowest H* site of these binding classes (comma list of metal, N, C: what "
        "the H binds to), so DFT can take ΔGH* as a minimum over classes (default: the best site only)",
    )
    parser.add_argument(
        "--model-hash",
        default=None,
        help="use this model's results (default: the largest run, the newest of equals)",
    )
    parser.add_argument(
        "--settings-hash",
        default=None,
        help="use this settings hash (default: the largest run, the newest of equals)",
    )


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from screening.labelling import get_preset
    from structures.common import InputError, read_host_list

    from .export import FORMATS, TASKS, ExportConfig, export, load_candidates
    from .tables import load_table, rank, select

    if args.format not in FORMATS:
        raise InputError(f"unknown format '{args.format}'; allowed: {', '.join(FORMATS)}")
    if args.task not in TASKS:
        raise InputError(f"unknown task '{args.task}'; allowed: {', '.join(TASKS)}")
    from screening.anchoring import parse_site_classes

    get_preset(args.preset)
    classes = parse_site_classes(args.site_classes)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not args.force)):
        raise InputError(f"--out '{out}' is not an empty folder; choose a new folder or pass --force")
    config = replace(ExportConfig(), task=args.task, preset=args.preset)
    if args.pseudo:
        if "{symbol}" not in args.pseudo:
            raise InputError(
                f"--pseudo '{args.pseudo}' has no {{symbol}}; allowed: a pattern like {{symbol}}.pbe.UPF"
            )
        config = replace(config, pseudo=args.pseudo)
    table = rank(load_table(args.db, args.model_hash, args.settings_hash))
    exclude = read_host_list(args.exclude_hosts, "--exclude-hosts") if args.exclude_hosts else ()
    chosen = select(table, args.select, limit=args.max, exclude=exclude)
    cands = load_candidates(args.db, chosen)
    if classes:
        from .validate import class_states

        extra = class_states(args.db, chosen, classes)
        for c in cands:  # after the candidate's own host, H* and H2 folders
            c.states += [s for s in extra if s.folder.startswith(f"{c.host}/H@")]
    manifest = export(
        cands, out, args.format, config, db_path=str(args.db), selection=args.select, force=args.force
    )
    print(
        f"{len(cands)} candidates ({', '.join(c.host for c in cands)}), "
        f"{len(manifest['entries'])} structures "
        f"-> {out} [{args.format}, {args.task}]; manifest: {out / 'manifest.json'}"
    )
    return 0
