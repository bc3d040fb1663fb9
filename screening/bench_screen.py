"""``screen bench screen``: throughput of the screen, memory, batch-size scaling and SevenNet-0 + ASE FIRE.

Measured in one run on one machine:

- the screen (references, batched relaxations, ΔGH* evaluation) on the selection, into a temporary
  database: structures relaxed per second, wall time; with ``--limit`` the full screen
  (all 23 metals x 20 motifs, homo pairs, every H* site) is *extrapolated* from that subset, and says so;
- peak memory (``ru_maxrss`` of this process after the screen, before SevenNet is loaded);
- batch-size scaling: structure-steps per second of ``relax_many`` at several batch sizes;
- the same relaxations done by SevenNet-0 (``SevenNetCalculator('7net-0')``) + ``ase.optimize.FIRE``
  one structure at a time on a stated subset: throughput ratio;
- hook for accuracy: ``--reference`` (a results .db or a CSV with columns host, dg) gives the ΔGH* MAE
  of the screened hosts against it and the fraction of errors inside 2σ.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="checkpoint (default: the embedded default model)")
    parser.add_argument(
        "--untrained",
        default=None,
        metavar="PRESET",
        help="no checkpoint: time an untrained model of this potentials.model preset (speed only)",
    )
    parser.add_argument("--metals", default="all")
    parser.add_argument("--motifs", default="all")
    parser.add_argument(
        "--limit", type=int, default=None, help="hosts to run; the full screen is extrapolated"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="structures in flight (default: screen run's, 32 / 512 on a GPU)",
    )
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--batch-sizes", default="1,8,32", help="batch-size scaling points (comma list)")
    parser.add_argument("--scaling-structures", type=int, default=16, help="structures in the scaling test")
    parser.add_argument(
        "--scaling-steps", type=int, default=5, help="FIRE steps per structure in the scaling test"
    )
    parser.add_argument(
        "--sevenn", type=int, default=1, help="structures relaxed by SevenNet-0 + ASE FIRE (0: skip)"
    )
    parser.add_argument(
        "--sevenn-steps", type=int, default=None, help="FIRE step cap for SevenNet (default: --max-steps)"
    )
    parser.add_argument(
        "--reference", default=None, help="ΔGH* reference: results .db or CSV (host, dg) -> MAE hook"
    )
    parser.add_argument("--root", default=".", help="where benchmarks/results and BENCHMARKS.md live")


def _untrained(preset_name: str, device: str):
    """A ModelHandle for an untrained model of a preset (timings only)."""
    import functools

    from structures.metals import METALS

    from .pipeline import ModelHandle

    loader = functools.partial(untrained_posterior, preset_name, ("H", "C", "N", *METALS))
    post = loader()
    return ModelHandle(
        loader=loader, posterior=post, model_hash=f"muntrained-{preset_name}", path=f"untrained:{preset_name}"
    )


def untrained_posterior(preset_name: str, elements: tuple[str, ...]):
    import torch

    from potentials.bayes.point import PointPosterior
    from potentials.model import build_model, preset

    torch.manual_seed(0)
    cfg = preset(preset_name, elements=elements)
    return PointPosterior(build_model(cfg), cfg)


def dg_accuracy(results, reference_path: str) -> dict:
    """MAE of ΔGH* against a reference (results .db or CSV host,dg) and 2σ coverage on the common hosts."""
    import numpy as np
    import pandas as pd

    from structures.common import InputError

    from .store import load_results

    if reference_path.endswith(".db"):
        ref = load_results(reference_path)[["host", "dg"]]
    else:
        try:
            ref = pd.read_csv(reference_path)[["host", "dg"]]
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(
                f"cannot read reference '{reference_path}': need a CSV with columns host, dg ({exc})"
            ) from exc
    both = results.merge(ref.rename(columns={"dg": "dg_ref"}), on="host")
    both = both[np.isfinite(both.dg) & np.isfinite(both.dg_ref)]
    if both.empty:
        return {"n_hosts": 0}
    err = (both.dg - both.dg_ref).abs()
    return {
        "n_hosts": int(len(both)),
        "dg_mae_eV": float(err.mean()),
        "coverage_2sigma": float((err <= 2 * both.dg_std).mean()),
    }


def run(args: argparse.Namespace) -> int:
    import os
    import resource
    import tempfile
    import time
    from dataclasses import replace

    import torch

    from structures.common import InputError, device_section, write_bench_result
    from structures.enumerate import count_structures
    from structures.metals import METALS, resolve_metals
    from structures.motifs import resolve_motifs

    from .dgh import DGConfig
    from .pipeline import ScreenConfig, load_model, run_screen, select_structures
    from .relax import RelaxConfig, RelaxProgress, default_batch_size, relax_many, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = str(resolve_device(args.device))
    batch_size = default_batch_size(device) if args.batch_size is None else args.batch_size
    sizes = [int(s) for s in str(args.batch_sizes).split(",") if s.strip()]
    if not sizes or min(sizes) < 1:
        raise InputError(
            f"--batch-sizes '{args.batch_sizes}' not allowed; give a comma list of integers >= 1"
        )
    if args.untrained:
        handle = _untrained(args.untrained, device)
    else:
        handle = load_model(args.model)
    relax_cfg = replace(RelaxConfig(), fmax=args.fmax, max_steps=args.max_steps, batch_size=batch_size)
    config = ScreenConfig(
        metals=args.metals,
        motifs=args.motifs,
        limit=args.limit,
        relax=relax_cfg,
        dg=DGConfig(n_samples=args.samples),
        device=device,
        progress=False,
    )
    groups = select_structures(config)
    n_sel = sum(1 + len(g.states) for g in groups)
    n_full = count_structures(list(METALS), resolve_motifs("all"))
    n_full_sel = count_structures(resolve_metals(args.metals), resolve_motifs(args.motifs))

    # 1. the screen on the selection
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "bench.db")
        summary = run_screen(config, db, model=handle)
        import ase.db

        steps = [row.n_steps for row in ase.db.connect(db).select(kind="structure", state="relaxed")]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    rate = summary.n_relaxed / summary.relax_wall_s if summary.relax_wall_s > 0 else float("nan")
    extrapolated = args.limit is not None or n_full_sel != n_full
    # relaxations scale with structures; references, evaluation, start-up per host (an upper bound)
    n_full_hosts = len(METALS) * len(resolve_motifs("all"))
    other = max(0.0, summary.wall_s - summary.relax_wall_s)
    full_wall = (n_full / rate + other * n_full_hosts / summary.n_hosts) if extrapolated else summary.wall_s
    evals_rate = summary.n_evaluations / summary.relax_wall_s if summary.relax_wall_s > 0 else float("nan")

    # 2. batch-size scaling (fixed work: every structure takes exactly --scaling-steps steps)
    pool = [a for g in groups for a in (g.host, *g.states)][: args.scaling_structures]
    scaling = []
    for bs in sizes:
        counter = [0]

        def count(p: RelaxProgress, counter=counter) -> None:
            counter[0] = p.n_evaluations

        t0 = time.perf_counter()
        for _ in relax_many(
            pool,
            handle.posterior.mean_forward,
            batch_size=bs,
            fmax=1e-12,
            max_steps=args.scaling_steps,
            device=device,
            callback=count,
        ):
            pass
        dt = time.perf_counter() - t0
        scaling.append({"batch_size": bs, "structure_steps_per_s": counter[0] / dt, "wall_s": dt})

    # 3. SevenNet-0 + ASE FIRE, one structure at a time, on a stated subset
    sevenn: dict = {"n_structures": 0}
    if args.sevenn > 0:
        sevenn = _sevenn(pool[: args.sevenn], args.fmax, args.sevenn_steps or args.max_steps)
        ours = [
            r
            for r in relax_many(
                pool[: args.sevenn],
                handle.posterior.mean_forward,
                batch_size=batch_size,
                fmax=args.fmax,
                max_steps=args.sevenn_steps or args.max_steps,
                device=device,
            )
        ]
        sevenn["ours_steps"] = [r.n_steps for r in ours]
        sevenn["ratio_structures_per_s"] = (
            rate / sevenn["structures_per_s"] if sevenn["structures_per_s"] else None
        )
        sevenn["ratio_structure_steps_per_s"] = evals_rate / sevenn["structure_steps_per_s"]

    accuracy = (
        dg_accuracy(summary.results, args.reference)
        if args.reference
        else {
            "note": "not measured: pass --reference (results .db or CSV host,dg of held-out hosts) once reference ΔGH* exist"
        }
    )

    result = {
        "model": handle.path or handle.model_hash,
        "device": device,
        "threads": torch.get_num_threads(),
        "selection": {
            "metals": args.metals,
            "motifs": args.motifs,
            "limit": args.limit,
            "n_hosts": summary.n_hosts,
            "n_structures": n_sel,
        },
        "settings": {"fmax": args.fmax, "max_steps": args.max_steps, "batch_size": batch_size},
        "screen": {
            "wall_s": summary.wall_s,
            "relax_wall_s": summary.relax_wall_s,
            "structures_relaxed_per_s": rate,
            "structure_steps_per_s": evals_rate,
            "mean_fire_steps": sum(steps) / max(1, len(steps)),
            "converged_fraction": sum(1 for s in steps if s < args.max_steps) / max(1, len(steps)),
        },
        "full_screen": {
            "n_structures": n_full,
            "wall_s": full_wall,
            "wall_min": full_wall / 60.0,
            "extrapolated": extrapolated,
            "target_min": 30.0,
        },
        "memory_peak_mb": peak_mb,
        "batch_scaling": scaling,
        "sevenn": sevenn,
        "dg_accuracy": accuracy,
    }
    table = _table(result)
    print(table)
    command = "screen bench screen " + " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
        if k
        in {
            "model",
            "untrained",
            "metals",
            "motifs",
            "limit",
            "batch_size",
            "max_steps",
            "threads",
            "batch_sizes",
            "scaling_structures",
            "scaling_steps",
            "sevenn",
            "sevenn_steps",
            "reference",
        }
        and v not in (None, False)
    )
    write_bench_result(device_section("screen", device), result, command, table, root=args.root)
    return 0


def _sevenn(structures, fmax: float, max_steps: int) -> dict:
    """SevenNet-0 + ASE FIRE, one structure at a time (structures/s, structure-steps/s)."""
    import time

    from ase.optimize import FIRE

    from structures.common import InputError

    try:
        from sevenn.calculator import SevenNetCalculator
    except ImportError as exc:
        raise InputError(
            "SevenNet is not installed; pip install 'dacscreen[reference]' or pass --sevenn 0"
        ) from exc
    calc = SevenNetCalculator("7net-0", device="cpu")
    steps, t0 = [], time.perf_counter()
    for atoms in structures:
        a = atoms.copy()
        a.calc = calc
        opt = FIRE(a, logfile=None)
        opt.run(fmax=fmax, steps=max_steps)
        steps.append(opt.nsteps)
    wall = time.perf_counter() - t0
    evals = sum(s + 1 for s in steps)
    return {
        "n_structures": len(structures),
        "max_steps": max_steps,
        "steps": steps,
        "wall_s": wall,
        "structures_per_s": len(structures) / wall,
        "structure_steps_per_s": evals / wall,
    }


def _table(r: dict) -> str:
    s, f, sv = r["screen"], r["full_screen"], r["sevenn"]
    sel = r["selection"]
    lines = [
        "| quantity | value |",
        "|---|---|",
        f"| model | {r['model']} ({r['device']}, {r['threads']} threads) |",
        f"| selection | {sel['n_hosts']} hosts, {sel['n_structures']} structures (metals {sel['metals']}, motifs {sel['motifs']}"
        f"{', limit ' + str(sel['limit']) if sel['limit'] else ''}) |",
        f"| structures relaxed / s | {s['structures_relaxed_per_s']:.3f} |",
        f"| structure-steps / s | {s['structure_steps_per_s']:.2f} |",
        f"| mean FIRE steps, converged fraction | {s['mean_fire_steps']:.1f}, {s['converged_fraction']:.2f} |",
        f"| wall time of the selection | {s['wall_s']:.1f} s |",
        f"| full screen ({f['n_structures']} structures) | {f['wall_min']:.1f} min"
        f"{' (extrapolated from the selection)' if f['extrapolated'] else ''}; target < 30 min |",
        f"| memory peak | {r['memory_peak_mb']:.0f} MB |",
    ]
    for p in r["batch_scaling"]:
        lines.append(f"| batch size {p['batch_size']} | {p['structure_steps_per_s']:.2f} structure-steps/s |")
    if sv.get("n_structures"):
        lines.append(
            f"| SevenNet-0 + ASE FIRE ({sv['n_structures']} structure(s), cap {sv['max_steps']} steps) | "
            f"{sv['structures_per_s']:.4f} structures/s, {sv['structure_steps_per_s']:.3f} structure-steps/s |"
        )
        ratio = sv.get("ratio_structures_per_s")
        lines.append(
            f"| throughput ratio vs SevenNet-0 + ASE | {ratio:.1f}x structures/s, "
            f"{sv['ratio_structure_steps_per_s']:.1f}x structure-steps/s; target >= 20x |"
        )
    acc = r["dg_accuracy"]
    lines.append(f"| ΔGH* accuracy | {acc.get('note') or acc} |")
    return "\n".join(lines)
