"""``screen validate --db results.db --engine gpaw|emt --select uncertain --max N [--relax]``: DFT ΔGH* of
selected candidates on the model-relaxed geometries (host, host+H*, H2), written back into the results store.

Example (real GPAW on two doubtful candidates, one core)::

    OMP_NUM_THREADS=1 screen validate --db results.db --engine gpaw --preset pw500 --select uncertain --max 2
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from screening.cmd_label import add_settings_arguments

    parser.add_argument("--db", required=True, help="results database written by `screen run` (.db)")
    parser.add_argument(
        "--engine",
        default="gpaw",
        help="reference engine of `screen label`: gpaw, emt, sevenn or ase:<module>:<Class> (default gpaw)",
    )
    parser.add_argument(
        "--select",
        default="uncertain",
        help="uncertain, bald (largest information gain about ΔGH* first: DFT as the active-learning "
        "oracle), bald:per-metal, random, random:per-metal (one host per metal pair, seeded: representative "
        "labels for `screen anchor`), top:N, flag:NAME (hosts carrying that flag, e.g. flag:pair_stretched), "
        "id:HOST[,HOST] or all (default uncertain)",
    )
    parser.add_argument(
        "--exclude-hosts",
        default=None,
        help="hosts never selected: comma list or file (e.g. benchmarks/heldout_hosts.txt)",
    )
    parser.add_argument(
        "--skip-labelled-pairs",
        action="store_true",
        help="leave out every host whose metal pair already has a DFT (host, host+H, H2) triple in --labels "
        "at these settings: with --select random:per-metal, the next DFT label for `screen anchor` goes to "
        "an unlabelled pair",
    )
    parser.add_argument(
        "--max",
        type=int,
        default=None,
        help="at most this many candidates (default 2; with --select id: every named host)",
    )
    parser.add_argument(
        "--relax", action="store_true", help="short engine relaxation (BFGS) before the single point"
    )
    parser.add_argument(
        "--bond-line",
        action="store_true",
        help="one more single point of host and host+H* each, the metal pair moved toward the engine's bond "
        "minimum (step f/30 eV/Å², at most 0.15 Å): the bond stiffness and ΔGH* with the M–M bond "
        "relaxed (dft_dg_bond), at twice the DFT cost",
    )
    parser.add_argument("--steps", type=int, default=30, help="BFGS steps of --relax (default 30)")
    parser.add_argument(
        "--fmax", type=float, default=0.05, help="force criterion of --relax, eV/Å (default 0.05)"
    )
    parser.add_argument(
        "--labels", default=None, help="label store for the DFT results (default <db stem>_dft_labels.db)"
    )
    parser.add_argument("--workers", type=int, default=1, help="engine processes (default 1)")
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
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--reuse-only",
        action="store_true",
        help="compute nothing: attach the labels --labels already holds for these exact geometries (e.g. a "
        "screen repeated with an anchored copy of the same network); rows without them stay unvalidated",
    )
    parser.add_argument(
        "--site-classes",
        default="",
        help="also label each host's lowest H* site of these binding classes (comma list of metal, N, C: "
        "what the H binds to), so the DFT ΔGH* is a minimum over classes (default: the best site only)",
    )
    add_settings_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import math

    from screening.labelling import get_engine, settings_from_args
    from structures.common import InputError, read_host_list

    from .tables import load_table, rank, select
    from .validate import ValidateConfig, default_labels_db, result_line, validate

    if args.steps < 1 or not args.fmax > 0:
        raise InputError(
            f"--steps {args.steps} / --fmax {args.fmax} not allowed; allowed: steps >= 1, fmax > 0 eV/Å"
        )
    get_engine(args.engine)  # unknown engine: one-line error before any work
    from screening.anchoring import parse_site_classes

    classes = parse_site_classes(args.site_classes)
    settings = settings_from_args(args)
    config = ValidateConfig(
        engine=args.engine,
        preset=args.preset,
        relax=args.relax,
        fmax=args.fmax,
        steps=args.steps,
        workers=args.workers,
        reuse_only=args.reuse_only,
        site_classes=classes,
        bond_line=args.bond_line,
    )
    table = rank(load_table(args.db, args.model_hash, args.settings_hash))
    exclude = list(read_host_list(args.exclude_hosts, "--exclude-hosts")) if args.exclude_hosts else []
    labels = args.labels or str(default_labels_db(args.db))
    if args.skip_labelled_pairs:
        from screening.anchoring import labelled_pairs, pair_of
        from screening.labelling import settings_hash

        done = labelled_pairs(labels, args.engine, settings_hash(get_engine(args.engine), settings))
        exclude += [h for h in table["host"] if pair_of(h) in done]
        print(f"skipping metal pairs with DFT labels in {labels}: {', '.join(sorted(done)) or 'none'}")
    named = str(args.select).startswith("id:")
    limit = args.max if args.max is not None else (None if named else 2)
    chosen = select(table, args.select, limit=limit, exclude=exclude)
    if named and limit is not None:
        n_named = len([h for h in str(args.select)[3:].split(",") if h.strip()])
        if n_named > limit:
            print(f"note: --select names {n_named} hosts; --max {limit} keeps the first {limit}", flush=True)
    print(
        f"validating {len(chosen)} candidate(s) with {args.engine} "
        f"({args.preset}{', relax' if args.relax else ''}{', bond line' if args.bond_line else ''}): "
        f"{', '.join(chosen['host'])}; labels -> {labels}",
        flush=True,
    )
    if not classes:
        print(
            "note: DFT at each host's best site only, so its DFT ΔGH* is an upper bound (a minimum over "
            "sites); --site-classes metal,N,C also labels the best site of each binding class",
            flush=True,
        )
    results = validate(
        args.db,
        chosen,
        config,
        settings=settings,
        labels_db=labels,
        progress=not args.no_progress,
        echo=lambda m: print(m, flush=True),
    )
    for r in results:
        print(result_line(r, args.engine, args.reuse_only))
    unvalidated = [r for r in results if not math.isfinite(r.dft_dg)]
    partial = sum(r.status == "partial" for r in unvalidated)
    missing = sum(r.status == "error" for r in unvalidated) if args.reuse_only else 0
    failed = len(unvalidated) - partial - missing
    print(
        f"{len(results) - failed - missing - partial}/{len(results)} validated; dft_dg written to {args.db}"
        + (f" ({missing} without labels left as they were)" if missing else "")
        + (f" ({partial} at other sites only: dft_dg_host)" if partial else "")
    )
    return 1 if failed or (partial and not args.reuse_only) else 0
