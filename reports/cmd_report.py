"""``screen report --db results.db --out report/``: ranking table (CSV, Markdown), figures (PNG, SVG) and
a self-contained report.html."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="results database written by `screen run` (.db)")
    parser.add_argument("--out", required=True, help="output folder (files in it are replaced)")
    parser.add_argument(
        "--preset", default="default", help="report preset: default, paper, strict (default: default)"
    )
    parser.add_argument(
        "--window", type=float, default=None, help="activity window |ΔGH*| in eV (default 0.2)"
    )
    parser.add_argument(
        "--top", type=int, default=None, help="candidates shown in the ranked figure (default 40)"
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

    from structures.common import InputError

    from .html import build_report
    from .tables import get_preset

    config = get_preset(args.preset)
    if args.window is not None:
        if not args.window > 0:
            raise InputError(
                f"--window {args.window} is not allowed; allowed: a positive energy in eV, e.g. 0.2"
            )
        config = replace(config, window=args.window)
    if args.top is not None:
        if args.top < 1:
            raise InputError(f"--top {args.top} is not allowed; allowed: an integer >= 1")
        config = replace(config, max_ranked=args.top)
    res = build_report(args.db, args.out, config, args.model_hash, args.settings_hash)
    df, st = res["table"], res["stats"]
    best = df.iloc[0]
    print(
        f"{len(df)} hosts ranked; best {best['host']} ({best['best_site']}): ΔGH* = {best['dg']:.3f} ± "
        f"{best['dg_std']:.3f} eV"
    )
    if st.get("n"):
        print(f"DFT validation: n = {st['n']}, MAE {st['mae']:.3f} eV, inside 2σ {st['within_2sigma']:.0%}")
    if st.get("n_host"):
        print(
            f"against DFT's lowest labelled site of each host: n = {st['n_host']}, MAE {st['mae_host']:.3f} eV "
            f"({st['n_other_site']} at another site than the model's)"
        )
    if st.get("n"):
        from .figures import candidate_check_text

        check = candidate_check_text(st.get("candidates", {}))
        if check:
            print("DFT check of the candidates: " + check)
    print(f"{len(res['files'])} files -> {args.out} (open {args.out.rstrip('/')}/report.html)")
    return 0
