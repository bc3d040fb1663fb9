"""``screen bench heldout``: ΔGH* of the model against its reference on hosts it never saw.

Protocol (issue 8, "Accuracy"):

1. pick ``--n`` hosts (metal, motif) that appear in none of the ``--exclude`` training/validation files,
   one metal after another so that the selection spans metals and motifs (seeded, reproducible);
2. screen them with the model exactly as ``screen run`` does (4x4 cell, every H* site) into
   ``<work>/results.db`` (resumable: the screen skips finished rows);
3. relax every model-relaxed structure (host, each H* state, H2) again with the reference calculator
   (ASE FIRE, fixed cell, same fmax), starting from the model geometry, so the reference finds its own
   minimum nearby; reference energies are cached in ``<work>/reference_<engine>.json`` after every
   structure, keyed by structure name and cell (not by model), so a second model reuses them: the reference
   minimum is the reference's, whichever model's geometry it started from;
4. reference ΔGH* = min over sites [E(host+H) − E(host) − ½E(H2)] + the same ΔZPE − TΔS correction.

Writes benchmarks/results/heldout.json, a parity figure and the BENCHMARKS.md section; the per-host table
``<work>/heldout_reference.csv`` (host, dg) also serves ``screen bench screen --reference``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="checkpoint (default: the embedded default model)")
    parser.add_argument("--n", type=int, default=12, help="held-out hosts to pick (default 12)")
    parser.add_argument("--hosts", default=None, help="explicit hosts instead, e.g. Cu2@2Nb,Ti2@3Ne")
    parser.add_argument(
        "--exclude",
        default="",
        help="comma list of extxyz / ASE db files whose hosts (info 'host') were seen in training",
    )
    parser.add_argument(
        "--reference", default="sevenn", help="reference engine of `screen label` (default sevenn)"
    )
    parser.add_argument("--fmax", type=float, default=0.05, help="force criterion of both relaxations, eV/Å")
    parser.add_argument("--steps", type=int, default=300, help="FIRE step cap of the reference relaxation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--supercell", default="4x4", help="cell of the screen (default 4x4, as `screen run`)"
    )
    parser.add_argument("--max-steps", type=int, default=300, help="FIRE step cap of the model relaxation")
    parser.add_argument("--work", default="runs/heldout", help="working folder (resumable)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--root", default=".", help="where benchmarks/results and BENCHMARKS.md live")
    parser.add_argument(
        "--calibrate-out",
        default=None,
        metavar="PATH",
        help="fit the model's ΔGH* σ factor on these hosts and write the recalibrated model here "
        "(then measure it on OTHER hosts: another --seed, these in --exclude-hosts)",
    )
    parser.add_argument(
        "--exclude-hosts", default="", help="comma list of hosts not to pick (e.g. the calibration hosts)"
    )


def seen_hosts(paths: list[str]) -> set[str]:
    """Host names (``info['host']``) of every structure in the given extxyz / ASE db files."""
    from potentials.data import read_dataset
    from structures.common import InputError

    seen: set[str] = set()
    for p in paths:
        if not Path(p).exists():
            raise InputError(f"--exclude file '{p}' does not exist")
        for a in read_dataset(p):
            h = a.info.get("host")
            if h:
                seen.add(str(h))
    return seen


def pick_heldout(n: int, seen: set[str], seed: int) -> list[tuple[str, str]]:
    """``n`` (metal, motif) homo pairs not in ``seen``: a random unseen motif per metal, metals in a
    seeded random order, cycling until ``n`` hosts (motifs are not repeated while unused ones remain)."""
    import numpy as np

    from structures.metals import METALS
    from structures.motifs import resolve_motifs

    rng = np.random.default_rng(seed)
    metals = [str(m) for m in rng.permutation(list(METALS))]
    motifs = [m.name for m in resolve_motifs("all")]
    used_motifs: set[str] = set()
    out: list[tuple[str, str]] = []
    taken: set[str] = set()
    while len(out) < n:
        added = False
        for m in metals:
            if len(out) >= n:
                break
            free = [x for x in motifs if f"{m}2@{x}" not in seen and f"{m}2@{x}" not in taken]
            if not free:
                continue
            fresh = [x for x in free if x not in used_motifs] or free
            x = str(rng.choice(fresh))
            out.append((m, x))
            taken.add(f"{m}2@{x}")
            used_motifs.add(x)
            added = True
        if not added:
            break
    return out


def fit_dg_scale(err, sigma) -> float:
    """σ factor s that makes the z-scores err / (s σ) unit-variance (the Gaussian maximum likelihood)."""
    import numpy as np

    z = np.asarray(err, dtype=float) / np.asarray(sigma, dtype=float)
    z = z[np.isfinite(z)]
    if z.size == 0:
        raise ValueError("no finite (error, σ) pair to calibrate on")
    return float(np.sqrt(np.mean(z**2)))


def write_dg_calibrated(model_path: str, out: str, factor: float) -> float:
    """Copy of the posterior at ``model_path`` with its ΔGH* σ factor multiplied by ``factor``; returns
    the new factor."""
    from potentials.bayes import load_posterior

    post = load_posterior(model_path)
    post.recal.dg = float(post.recal.dg) * float(factor)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    post.save(out)
    return float(post.recal.dg)


def reference_dg(
    energies: dict[str, float], host: str, sites: list[str], h2: float, correction: float
) -> tuple[float, str]:
    """Reference ΔGH* of one host: the lowest site; ``energies`` maps structure names to energies (eV)."""
    import math

    best, best_site = math.inf, ""
    e_host = energies.get(host, math.nan)
    for s in sites:
        e = energies.get(f"{host}+H@{s}", math.nan)
        dg = e - e_host - 0.5 * h2 + correction
        if math.isfinite(dg) and dg < best:
            best, best_site = dg, s
    return (best if best_site else math.nan), best_site


def run(args: argparse.Namespace, handle: Any = None) -> int:
    """Run the benchmark; ``handle`` (a screening.pipeline.ModelHandle) replaces ``--model`` in tests."""
    import json
    import math
    import time

    import numpy as np
    import torch
    from ase.optimize import FIRE

    from structures.common import InputError, atomic_write_bytes, atomic_write_text, write_bench_result

    from .labelling import LabelSettings, get_engine
    from .pipeline import ScreenConfig, load_model, run_screen
    from .relax import RelaxConfig
    from .store import load_results, load_structures

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.n < 1:
        raise InputError(f"--n {args.n}: need at least 1 host")
    if args.hosts:
        pairs = []
        for h in args.hosts.split(","):
            metal, _, motif = h.strip().partition("2@")
            if not metal or not motif:
                raise InputError(f"bad host '{h}'; expected e.g. Cu2@2Nb")
            pairs.append((metal, motif))
        if args.exclude:  # explicit hosts must still be unseen: a held-out test on training hosts is void
            seen = seen_hosts([p for p in args.exclude.split(",") if p])
            clash = [f"{m}2@{x}" for m, x in pairs if f"{m}2@{x}" in seen]
            if clash:
                raise InputError(
                    f"--hosts {', '.join(clash)} appear in the --exclude training files; allowed: unseen hosts"
                )
    else:
        seen = seen_hosts([p for p in args.exclude.split(",") if p])
        seen |= {h.strip() for h in args.exclude_hosts.split(",") if h.strip()}
        pairs = pick_heldout(args.n, seen, args.seed)
    engine = get_engine(args.reference)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    db = work / "results.db"

    # ---- 1. the model's screen of the held-out hosts
    handle = handle or load_model(args.model)
    t0 = time.perf_counter()
    model_hash = settings_hash = ""
    for metal, motif in pairs:
        cfg = ScreenConfig(
            metals=metal,
            motifs=motif,
            supercell=args.supercell,
            relax=RelaxConfig(fmax=args.fmax, max_steps=args.max_steps),
            progress=False,
        )
        summary = run_screen(cfg, db, model=handle, out=None)
        model_hash, settings_hash = summary.model_hash, summary.settings_hash
    model_wall = time.perf_counter() - t0
    hosts = [f"{m}2@{x}" for m, x in pairs]
    res = load_results(db, model_hash=model_hash, settings_hash=settings_hash)
    res = res[res.host.isin(hosts)].set_index("host")
    structs = load_structures(db, model_hash=handle.structure_hash)
    structs = structs[structs.host.isin(hosts)]

    # ---- 2. the reference relaxations, cached
    cache_path = work / f"reference_{args.reference.replace(':', '_')}.json"
    cache: dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    settings = LabelSettings()
    calcs: list[Any] = []  # the engine's calculator, made on the first structure not in the cache

    def calculator(a):
        if engine.has_scf or not calcs:  # SCF engines set per-structure moments; others are reused
            calcs[:] = [engine.make(a, settings, engine.attempts(settings)[0], None)]
        return calcs[0]

    def relax(atoms, key: str) -> dict[str, Any]:
        """The reference's relaxation from ``atoms`` (the model-relaxed geometry), cached by name."""
        if key in cache:
            return cache[key]
        a = atoms.copy()
        a.calc = calculator(a)
        t = time.perf_counter()
        opt = FIRE(a, logfile=None)
        converged = bool(opt.run(fmax=args.fmax, steps=args.steps))
        rec = {
            "energy": float(a.get_potential_energy()),
            "steps": int(opt.nsteps),
            "converged": converged,
            "wall_s": time.perf_counter() - t,
        }
        cache[key] = rec
        atomic_write_text(cache_path, json.dumps(cache, indent=1))
        return rec

    # the reference's single points at each model's own relaxed geometries, cached by model and name
    sp_path = work / f"reference_{args.reference.replace(':', '_')}_at_model.json"
    sp_cache: dict[str, float] = json.loads(sp_path.read_text()) if sp_path.exists() else {}

    def single_point(atoms, key: str) -> float:
        key = f"{model_hash}/{key}"
        if key not in sp_cache:
            a = atoms.copy()
            a.calc = calculator(a)
            sp_cache[key] = float(a.get_potential_energy())
            atomic_write_text(sp_path, json.dumps(sp_cache, indent=1))
        return sp_cache[key]

    from .dgh import DGConfig, h2_molecule

    correction = DGConfig().correction
    h2 = relax(h2_molecule(), "H2")["energy"]
    rows = []
    from tqdm.auto import tqdm

    todo = structs.sort_values("name")
    energies: dict[str, float] = {}
    at_model: dict[str, float] = {}  # the reference's single points at the model-relaxed geometries
    n_unconv = 0
    for _, r in tqdm(list(todo.iterrows()), desc=f"reference relax [{args.reference}]", unit="struct"):
        rec = relax(r["atoms"], f"{r['name']}/{args.supercell}")
        energies[str(r["name"])] = rec["energy"] if rec["converged"] else math.nan
        at_model[str(r["name"])] = single_point(r["atoms"], f"{r['name']}/{args.supercell}")
        n_unconv += not rec["converged"]
    for h in hosts:
        sites = sorted(str(s) for s in structs[(structs.host == h) & (structs.site != "")].site)
        dg_ref, site_ref = reference_dg(energies, h, sites, h2, correction)
        m = res.loc[h] if h in res.index else None
        site = str(m["best_site"]) if m is not None else ""
        # the reference's ΔGH* at the model's own minimum (its site and geometry): far above the model's
        # ΔGH* means the model found a minimum that the reference does not have
        dg_at_model = (
            at_model.get(f"{h}+H@{site}", math.nan) - at_model.get(h, math.nan) - 0.5 * h2 + correction
        )
        rows.append(
            {
                "host": h,
                "dg_ref": dg_ref,
                "site_ref": site_ref,
                "dg_ref_at_model": dg_at_model,
                "dg": float(m["dg"]) if m is not None else math.nan,
                "dg_std": float(m["dg_std"]) if m is not None else math.nan,
                "site": str(m["best_site"]) if m is not None else "",
                "flags": str(m["flags"]) if m is not None else "",  # m.flags is pandas' own attribute
            }
        )
    import pandas as pd

    df = pd.DataFrame(rows)
    df[["host", "dg_ref"]].rename(columns={"dg_ref": "dg"}).to_csv(
        work / "heldout_reference.csv", index=False
    )
    ok = df[np.isfinite(df.dg) & np.isfinite(df.dg_ref)]
    err = (ok.dg - ok.dg_ref).to_numpy()
    z = np.abs(err) / ok.dg_std.to_numpy()
    at_model_err = (df.dg - df.dg_ref_at_model).to_numpy()
    at_model_err = at_model_err[np.isfinite(at_model_err)]
    result = {
        "model_hash": model_hash,
        "reference": args.reference,
        "hosts": rows,
        "n_hosts": int(len(ok)),
        "dg_mae_eV": float(np.mean(np.abs(err))) if len(ok) else math.nan,
        "dg_rmse_eV": float(np.sqrt(np.mean(err**2))) if len(ok) else math.nan,
        "dg_max_abs_err_eV": float(np.max(np.abs(err))) if len(ok) else math.nan,
        "dg_mean_err_eV": float(np.mean(err)) if len(ok) else math.nan,
        "coverage_1sigma": float(np.mean(z <= 1)) if len(ok) else math.nan,
        "coverage_2sigma": float(np.mean(z <= 2)) if len(ok) else math.nan,
        "same_best_site": float(np.mean(ok.site == ok.site_ref)) if len(ok) else math.nan,
        "dg_mae_at_model_geometry_eV": float(np.abs(at_model_err).mean()) if len(at_model_err) else math.nan,
        "n_reference_unconverged": n_unconv,
        "model_screen_wall_s": model_wall,
    }

    if args.calibrate_out:
        from .pipeline import default_model_path

        factor = fit_dg_scale(err, ok.dg_std.to_numpy())
        new = write_dg_calibrated(args.model or str(default_model_path()), args.calibrate_out, factor)
        result["calibration"] = {"fitted_factor": factor, "new_dg_factor": new, "out": args.calibrate_out}
        print(
            f"ΔGH* σ factor fitted on {len(ok)} hosts: x{factor:.3f} -> {args.calibrate_out} (dg factor {new:.3f})"
        )

    # ---- figure: parity with 2σ bars
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.errorbar(ok.dg_ref, ok.dg, yerr=2 * ok.dg_std, fmt="o", ms=4, capsize=2, label="model ± 2σ")
    for _, r in ok.iterrows():
        ax.annotate(r.host, (r.dg_ref, r.dg), fontsize=6, xytext=(3, 3), textcoords="offset points")
    lo = float(min(ok.dg_ref.min(), ok.dg.min())) - 0.2 if len(ok) else -1
    hi = float(max(ok.dg_ref.max(), ok.dg.max())) + 0.2 if len(ok) else 1
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set(
        xlabel=f"reference ΔGH* ({args.reference}, eV)",
        ylabel="model ΔGH* (eV)",
        title=f"held-out hosts: MAE {result['dg_mae_eV']:.3f} eV",
    )
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    bench_name = "heldout_calibration" if args.calibrate_out else "heldout"
    fig_path = Path(args.root) / "benchmarks" / "figures" / f"{bench_name}_dgh.png"
    atomic_write_bytes(fig_path, buf.getvalue())

    lines = [
        f"ΔGH* of the model against its reference (`{args.reference}`) on {len(ok)} hosts that appear in no "
        "training or validation file; the reference relaxes every structure again from the model geometry "
        f"(FIRE, fmax {args.fmax} eV/Å) and takes its own lowest site.",
        "",
        "| metric | value | target |",
        "|---|---|---|",
        f"| ΔGH* MAE | {result['dg_mae_eV']:.3f} eV | ≤ 0.10 eV |",
        f"| ΔGH* RMSE / max | {result['dg_rmse_eV']:.3f} / {result['dg_max_abs_err_eV']:.3f} eV | |",
        f"| mean error (model − reference) | {result['dg_mean_err_eV']:+.3f} eV | |",
        f"| errors inside 1σ / 2σ | {result['coverage_1sigma']:.2f} / {result['coverage_2sigma']:.2f} | 2σ: 0.90–0.98 |",
        f"| same best site | {result['same_best_site']:.2f} | |",
        f"| ΔGH* MAE at the model's own minimum (reference single points there) | "
        f"{result['dg_mae_at_model_geometry_eV']:.3f} eV | |",
        f"| reference relaxations not converged | {n_unconv} | |",
        "",
        "| host | model ΔGH* ± σ (eV) | model site | reference ΔGH* (eV) | reference site | error | "
        "reference at the model's minimum (eV) | flags |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['host']} | {r['dg']:+.3f} ± {r['dg_std']:.3f} | {r['site']} | {r['dg_ref']:+.3f} | "
            f"{r['site_ref']} | {r['dg'] - r['dg_ref']:+.3f} | {r['dg_ref_at_model']:+.3f} | {r['flags']} |"
        )
    lines += ["", f"![held-out parity]({fig_path.relative_to(Path(args.root)).as_posix()})"]
    parts = ["screen bench heldout"]
    if args.model:
        parts += ["--model", args.model]
    if args.hosts:
        parts += ["--hosts", args.hosts]
    else:
        parts += ["--n", str(args.n), "--seed", str(args.seed)]
        if args.exclude:
            parts += ["--exclude", args.exclude]
        if args.exclude_hosts:
            parts += ["--exclude-hosts", args.exclude_hosts]
    if args.calibrate_out:
        parts += ["--calibrate-out", args.calibrate_out]
    if args.reference != "sevenn":
        parts += ["--reference", args.reference]
    if args.calibrate_out:
        c = result["calibration"]
        lines.insert(
            0,
            f"**Calibration run**: these hosts fit the ΔGH* σ factor (x{c['fitted_factor']:.3f}, model's factor "
            f"now {c['new_dg_factor']:.3f}, written to `{c['out']}`); coverage below is *before* it. The test "
            "is the `heldout` section, on other hosts.\n",
        )
    write_bench_result(bench_name, result, " ".join(parts), "\n".join(lines), root=args.root)
    print("\n".join(lines[:11]))
    return 0
