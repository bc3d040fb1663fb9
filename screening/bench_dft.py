"""``screen bench dft``: DFT settings convergence of ΔE_H and the state of the DFT label store.

(a) ΔE_H = E(host+H) − E(host) − ½E(H2) (eV, each settings its own H2) at the chosen settings (``--base``,
default pw400: PW 400 eV, 3x3x1 k) against tighter ones (``--tight``, default pw500k4: 500 eV, 4x4x1 k) for
the hosts in the store; settings are kept when ΔE_H moves by ≤ ``--tolerance`` (0.05 eV). By default the
benchmark only reads the store that the campaign fills; ``--compute`` labels the missing single points first
(hours of CPU per host). (b) Counts per metal / motif and core-hours from the store.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default="dft/labels.db", help="label store (default dft/labels.db)")
    parser.add_argument("--hosts", default="Fe,Ni,Cu", help="metals of the settings check (default Fe,Ni,Cu)")
    parser.add_argument("--motifs", default="6Na", help="motifs of the settings check (default 6Na)")
    parser.add_argument("--site", default="top_M1", help="H* site of the check (default top_M1)")
    parser.add_argument("--supercell", default="4x4", help="supercell of the check (default 4x4)")
    parser.add_argument(
        "--tight-supercell",
        default=None,
        help="the cell-size check: the tight triple in this larger supercell (e.g. 5x5; with --frames "
        "builder), same or other preset (default: --supercell)",
    )
    parser.add_argument("--base", default="pw400", help="settings preset under test (default pw400)")
    parser.add_argument("--tight", default="pw500k4", help="tighter reference preset (default pw500k4)")
    parser.add_argument(
        "--also",
        default="",
        help="comma list of further presets (e.g. pw600): a ladder table of ΔE_H with step-to-step changes",
    )
    parser.add_argument(
        "--tolerance", type=float, default=0.05, help="allowed ΔE_H change, eV (default 0.05)"
    )
    parser.add_argument(
        "--compute", action="store_true", help="label the missing single points with GPAW first"
    )
    parser.add_argument(
        "--frames",
        default="builder",
        choices=("builder", "validation"),
        help="geometries of the check: the builder's (default) or the model-relaxed ones of `screen validate`",
    )
    parser.add_argument("--workers", type=int, default=1, help="GPAW processes for --compute (default 1)")
    parser.add_argument(
        "--readme", default=None, help="also rewrite this README from the store (e.g. dft/README.md)"
    )
    parser.add_argument(
        "--root", default=".", help="where BENCHMARKS.md and benchmarks/results live (default .)"
    )
    parser.add_argument(
        "--section",
        default="dft",
        help="name of the BENCHMARKS.md section and result file (default dft; e.g. dft_kpoints for a second "
        "check beside the first)",
    )


#: ``frame`` values of the builder's own (unrelaxed) structures; other frames (``dft_validation`` rows of
#: `screen validate`, rattles, relaxation steps) share host names but not geometries
GENERATED_FRAMES = (None, "", "base", "reference")


#: supercell of the DFT labels (the 30-atom 4x4 cell); triples in other cells carry it in their name
DEFAULT_SUPERCELL = "4x4"


def triple_name(host: str, site: str, supercell: str | None = None) -> str:
    """``Cu2@4Na+H@top_X0``; ``Cu2@4Na+H@top_X0 (5x5)`` in a cell other than the default 4x4."""
    cell = supercell or DEFAULT_SUPERCELL
    return f"{host}+H@{site}" + ("" if cell == DEFAULT_SUPERCELL else f" ({cell})")


def delta_e_h(
    db_path: str, engine: str = "gpaw", frames: tuple = GENERATED_FRAMES
) -> dict[str, dict[str, dict[str, Any]]]:
    """ΔE_H (eV) of every (settings hash, host, site) whose host, host+H and H2 rows all converged, on one
    set of geometries: ``frames`` (default the builder's, ``GENERATED_FRAMES``; ``("dft_validation",)``:
    the model-relaxed geometries of ``screen validate``).

    Returns {settings_hash: {f"{host}+H@{site}": {"dE_H", "E_host", "E_hostH", "E_H2", "core_h", ...}}}.
    The latest row wins when a structure was labelled more than once. Hosts in different supercells are
    different triples (:func:`triple_name`).
    """
    import ase.db

    db = ase.db.connect(str(db_path))
    by_sh: dict[str, dict[str, Any]] = {}
    for row in db.select(f"label_key,engine={engine},converged=True", sort="id"):
        kv = row.key_value_pairs
        if kv.get("frame") not in frames:
            continue  # relaxation / rattle / validation geometries are not the builder's triple
        d = by_sh.setdefault(kv["settings_hash"], {"h2": None, "host": {}, "ads": {}})
        cell = kv.get("supercell") or DEFAULT_SUPERCELL
        if kv.get("name") == "H2":
            d["h2"] = row
        elif kv.get("site"):
            d["ads"][(kv.get("host"), kv["site"], cell)] = row
        elif kv.get("host"):
            d["host"][(kv["host"], cell)] = row
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for sh, d in by_sh.items():
        if d["h2"] is None:
            continue
        for (host, site, cell), ads in d["ads"].items():
            if (host, cell) not in d["host"]:
                continue
            h, e_h2 = d["host"][(host, cell)], d["h2"].energy
            out.setdefault(sh, {})[triple_name(host, site, cell)] = {
                "dE_H": ads.energy - h.energy - 0.5 * e_h2,
                "E_host": h.energy,
                "E_hostH": ads.energy,
                "E_H2": e_h2,
                "metal": h.get("metal"),
                "motif": h.get("motif"),
                "core_h": (ads.wall_s + h.wall_s) / 3600.0,
                "n_scf": (h.get("n_scf"), ads.get("n_scf")),
                "magmom": (h.get("magmom"), ads.get("magmom")),
            }
    return out


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys
    from pathlib import Path

    from screening import labelling as L
    from structures.common import InputError, check_section_name, write_bench_result
    from structures.metals import resolve_metals
    from structures.motifs import resolve_motifs

    check_section_name(args.section)
    eng = L.get_engine("gpaw")
    base, tight = L.get_preset(args.base), L.get_preset(args.tight)
    sh_base, sh_tight = L.settings_hash(eng, base), L.settings_hash(eng, tight)
    metals, motifs = resolve_metals(args.hosts), resolve_motifs(args.motifs)
    if args.compute and args.frames != "builder":
        raise InputError("--compute labels the builder geometries only; allowed with --frames builder")
    tight_cell = args.tight_supercell or args.supercell
    if tight_cell != args.supercell and args.frames != "builder":
        raise InputError("--tight-supercell builds its structures: allowed with --frames builder only")
    if args.compute:
        for s, cell in ((base, args.supercell), (tight, tight_cell)):
            q = L.build_queue(metals, motifs, supercell=cell, with_h=True, sites=[args.site], h2=True)
            L.label_structures(q, eng, s, args.db, workers=args.workers)
    if not Path(args.db).exists():
        raise InputError(
            f"label database '{args.db}' does not exist; allowed: a store written by `screen label`"
        )
    frames = GENERATED_FRAMES if args.frames == "builder" else ("dft_validation",)
    table = delta_e_h(args.db, frames=frames)
    summ = L.db_summary(args.db)
    wanted = [(f"{m}2@{mo.name}", args.site) for mo in motifs for m in metals]
    geometry = (
        "Unrelaxed builder geometries"
        if args.frames == "builder"
        else "Model-relaxed geometries of `screen validate`"
    )
    # the same preset on two cells (the cell-size check) is told apart by the cell
    base_label, tight_label = args.base, args.tight
    if args.base == args.tight:
        base_label, tight_label = f"{args.base} {args.supercell}", f"{args.tight} {tight_cell}"
    conv_rows, lines = (
        [],
        [
            f"### (a) Settings convergence of ΔE_H = E(host+H) − E(host) − ½E(H2), H on {args.site}",
            "",
            f"Base `{args.base}` (ecut {base.ecut:.0f} eV, k-density {base.kdens}, {args.supercell} cell) vs "
            f"tight `{args.tight}` (ecut {tight.ecut:.0f} eV, k-density {tight.kdens}, {tight_cell} cell); "
            f"keep the base when |Δ| ≤ {args.tolerance} eV. {geometry}, single points, GPAW PW PBE spin-polarised.",
            "",
            f"| system | ΔE_H {base_label} (eV) | ΔE_H {tight_label} (eV) | Δ (eV) | verdict |",
            "|---|---|---|---|---|",
        ],
    )
    for host, site in wanted:
        name = triple_name(host, site, args.supercell)
        b = table.get(sh_base, {}).get(name)
        t = table.get(sh_tight, {}).get(triple_name(host, site, tight_cell))
        if b and t:
            diff = t["dE_H"] - b["dE_H"]
            verdict = "keep" if abs(diff) <= args.tolerance else "tighten"
            conv_rows.append(
                {"system": name, "base": b["dE_H"], "tight": t["dE_H"], "diff": diff, "verdict": verdict}
            )
            lines.append(f"| {name} | {b['dE_H']:+.3f} | {t['dE_H']:+.3f} | {diff:+.3f} | {verdict} |")
        else:
            fb = f"{b['dE_H']:+.3f}" if b else "not finished"
            ft = f"{t['dE_H']:+.3f}" if t else "not finished"
            lines.append(f"| {name} | {fb} | {ft} | – | – |")
    ladder_names = [args.base, args.tight, *[s for s in args.also.split(",") if s.strip()]]
    ladder_rows = []
    if len(ladder_names) > 2:
        hashes = [L.settings_hash(eng, L.get_preset(n.strip())) for n in ladder_names]
        lines += [
            "",
            "Ladder (each step's change in parentheses):",
            "",
            "| system | " + " | ".join(f"ΔE_H {n} (eV)" for n in ladder_names) + " |",
            "|---|" + "---|" * len(ladder_names),
        ]
        for host, site in wanted:
            name = triple_name(host, site, args.supercell)
            vals = [table.get(h, {}).get(name) for h in hashes]
            cells, prev = [], None
            for v in vals:
                if v is None:
                    cells.append("not finished")
                    prev = None
                    continue
                step = "" if prev is None else f" ({v['dE_H'] - prev:+.3f})"
                cells.append(f"{v['dE_H']:+.3f}{step}")
                prev = v["dE_H"]
            ladder_rows.append(
                {"system": name, **{n: (v or {}).get("dE_H") for n, v in zip(ladder_names, vals)}}
            )
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    done_base = table.get(sh_base, {})
    lines += [
        "",
        f"### ΔE_H of every complete triple at `{args.base}`",
        "",
        "| system | ΔE_H (eV) | E(host) (eV) | E(host+H) (eV) | SCF iterations | moment host, host+H (μB) "
        "| core-h |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in sorted(done_base.items()):
        mm = ", ".join("–" if m is None else f"{abs(m):.2f}" for m in r["magmom"])
        nscf = ", ".join("–" if n is None else str(n) for n in r["n_scf"])
        lines.append(
            f"| {name} | {r['dE_H']:+.3f} | {r['E_host']:.3f} | {r['E_hostH']:.3f} | {nscf} | {mm} | "
            f"{r['core_h']:.2f} |"
        )
    if not done_base:
        lines.append("| (none finished yet) | | | | | | |")
    lines += [
        "",
        "### (b) Label store",
        "",
        f"{summ['rows']} rows, {summ['converged']} converged, {summ['failed']} flagged; "
        f"{summ['core_hours']:.2f} core-hours.",
        "",
        "| engine | rows | converged | core-hours |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {e} | {v['rows']} | {v['converged']} | {v['core_hours']:.2f} |"
        for e, v in summ["by_engine"].items()
    ]
    lines += [
        "",
        "Converged labels per metal: "
        + (", ".join(f"{k} {v}" for k, v in sorted(summ["by_metal"].items())) or "–"),
        "",
        "Converged labels per motif: "
        + (", ".join(f"{k} {v}" for k, v in sorted(summ["by_motif"].items())) or "–"),
    ]
    argv = sys.argv[3:] if sys.argv[1:3] == ["bench", "dft"] else []
    command = " ".join(["screen bench dft", *(shlex.quote(a) for a in argv)])
    result = {
        "settings_check": conv_rows,
        "ladder": ladder_rows,
        "delta_e_h_base": done_base,
        "store": summ,
        "base": {"name": args.base, "hash": sh_base, **base.to_dict()},
        "tight": {"name": args.tight, "hash": sh_tight, **tight.to_dict()},
        "tolerance_eV": args.tolerance,
        "supercell": args.supercell,
        "tight_supercell": tight_cell,
    }
    path = write_bench_result(args.section, result, command.strip(), "\n".join(lines), root=args.root)
    if args.readme:
        L.write_readme(args.db, args.readme)
    print("\n".join(lines))
    print(f"recorded -> {path}")
    return 0
