"""``screen bench potential``: acac accuracy of a RACE potential and its CPU speed against SevenNet-0.

Trains on acac train_300K (E0s from isolated_atoms.xyz, 10 % held out for validation), reports energy
(meV) and force (meV/Å) MAE/RMSE on test_MD_300K and test_MD_600K next to published numbers, then times
energy+forces calls on a 75-atom periodic C/N/Fe graphene-like cell for our ``small`` preset and
SevenNet-0 in the same process and thread setting.
"""

from __future__ import annotations

import argparse

DEFAULT_DATA = "../shared/data/botnet/acac"  # relative to the repository root

# Published acac test RMSEs (energy meV, forces meV/Å), MACE paper, Batatia et al., NeurIPS 2022,
# arXiv:2206.07697 (AcAc table). None = not transcribed here (n/a).
PUBLISHED = {
    "MACE": {"300K": (0.9, 5.1), "600K": (4.6, 22.4)},
    "NequIP": {"300K": (None, None), "600K": (None, None)},
    "BOTNet": {"300K": (None, None), "600K": (None, None)},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="small", choices=("tiny", "small", "large"))
    parser.add_argument("--epochs", type=int, default=40, help="maximum number of epochs")
    parser.add_argument(
        "--mse-warmup", type=int, default=None, help="MSE epochs before NLL_JEF (default: 2/3 of --epochs)"
    )
    parser.add_argument("--max-minutes", type=float, default=20.0, help="training wall-time budget")
    parser.add_argument("--n-train", type=int, default=500, help="structures taken from train_300K (<= 500)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA, help="folder with the acac extxyz files")
    parser.add_argument(
        "--work-dir", default="runs/bench_potential", help="checkpoints (resumable; runs/ is not committed)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for training and timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="structures per step (default: the preset's)"
    )
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the preset's)")
    parser.add_argument(
        "--force-weight", type=float, default=None, help="force term weight (default: the preset's, 10)"
    )
    parser.add_argument("--section", default=None, help="BENCHMARKS.md section (default: potential[_cuda])")
    parser.add_argument(
        "--scheduler",
        default=None,
        choices=("plateau", "cosine", "none"),
        help="learning-rate schedule (default: the preset's; cosine suits a fixed --epochs budget)",
    )
    parser.add_argument("--no-sevennet", action="store_true", help="skip the SevenNet-0 timing")
    parser.add_argument("--speed-only", action="store_true", help="only the speed comparison")
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the accuracy run trains (cpu, cuda, auto); a GPU run gets its own BENCHMARKS.md section "
        "and skips the CPU speed comparison",
    )


def catalyst_cell():
    """75-atom periodic graphene-like cell: sqrt(37) x sqrt(37) graphene, one vacancy, 3 N, 2 Fe (Å)."""
    import numpy as np
    from ase import Atoms
    from ase.build import graphene, make_supercell

    sheet = make_supercell(
        graphene(formula="C2", a=2.46, vacuum=7.5), np.array([[7, 3, 0], [-3, 4, 0], [0, 0, 1]])
    )
    sheet.pbc = True
    centre = sheet.cell.array.sum(0) / 2
    centre[2] = sheet.positions[:, 2].mean()
    vacancy = int(np.argmin(np.linalg.norm(sheet.positions - centre, axis=1)))
    site = sheet.positions[vacancy].copy()
    dist = sheet.get_distances(vacancy, range(len(sheet)), mic=True)
    for i in np.argsort(dist)[1:4]:
        sheet[int(i)].symbol = "N"
    del sheet[vacancy]
    sheet += Atoms("Fe2", positions=[site + (0.0, 0.0, 1.6), site + (1.2, 1.9, 1.8)])
    return sheet


def _time_calls(atoms, calc, n_calls: int) -> float:
    """Seconds per energy+forces call (positions nudged every call so nothing is cached)."""
    import time

    atoms = atoms.copy()
    atoms.calc = calc
    atoms.get_forces()
    start = time.perf_counter()
    for k in range(n_calls):
        atoms.positions[k % len(atoms), 0] += 1e-3
        atoms.get_forces()
    return (time.perf_counter() - start) / n_calls


def speed(preset_name: str, n_calls: int, with_sevennet: bool) -> dict:
    """Latency (s/call) and throughput (atoms/s) of ours (single cell and 16-cell batches) and SevenNet-0."""
    import os
    import time
    from dataclasses import replace

    import torch

    from potentials.bayes.point import PointPosterior
    from potentials.calculator import BayesianCalculator
    from potentials.data import avg_num_neighbors, collate
    from potentials.model import build_model, preset

    cell = catalyst_cell()
    config = preset(preset_name, elements=("C", "N", "Fe"))
    config = replace(
        config, avg_num_neighbors=avg_num_neighbors([cell], config.cutoff)
    )  # weights: random init
    model = build_model(config).eval()
    ours = _time_calls(cell, BayesianCalculator(PointPosterior(model, config)), n_calls)
    batch = collate([cell] * 16, config.elements, config.cutoff, with_labels=False)
    model(batch, create_graph=False)
    start = time.perf_counter()
    for _ in range(max(1, n_calls // 4)):
        model(batch, create_graph=False)
    batched = (time.perf_counter() - start) / max(1, n_calls // 4)
    result = {
        "load_average_1min": os.getloadavg()[0],  # other jobs on the machine slow every timing down
        "cell": cell.get_chemical_formula(),
        "n_atoms": len(cell),
        "ours_latency_s": ours,
        "ours_atoms_per_s": len(cell) / ours,
        "ours_batched16_atoms_per_s": 16 * len(cell) / batched,
        "threads": torch.get_num_threads(),
    }
    if with_sevennet:
        from sevenn.calculator import SevenNetCalculator

        seven = _time_calls(cell, SevenNetCalculator("7net-0", device="cpu"), max(3, n_calls // 3))
        result.update(
            sevennet_latency_s=seven, sevennet_atoms_per_s=len(cell) / seven, speedup_vs_sevennet=seven / ours
        )
    return result


def accuracy(args: argparse.Namespace, device=None) -> dict:
    """Train on acac 300 K and evaluate on the 300 K and 600 K MD test sets (errors in meV, meV/Å)."""
    import json
    from dataclasses import replace
    from pathlib import Path

    from potentials import checkpoint
    from potentials.checkpoint import load_model
    from potentials.data import read_dataset, read_e0s
    from potentials.model import preset
    from potentials.train import evaluate, train, train_preset
    from structures.common import InputError

    data = Path(args.data_dir)
    if not data.is_dir():
        raise InputError(f"acac data folder not found: {data}; pass --data-dir")
    if not 2 <= args.n_train <= 500:
        raise InputError(f"--n-train {args.n_train} must be between 2 and 500")
    frames = read_dataset(data / "train_300K.xyz")[: args.n_train]
    e0s = read_e0s(data / "isolated_atoms.xyz")
    warmup = args.mse_warmup if args.mse_warmup is not None else (2 * args.epochs) // 3
    base = train_preset(args.preset)
    overrides = {
        k: v
        for k, v in (("batch_size", args.batch_size), ("lr", args.lr), ("scheduler", args.scheduler))
        if v is not None
    }
    train_config = replace(
        base,
        epochs=args.epochs,
        max_minutes=args.max_minutes,
        seed=args.seed,
        loss=replace(
            base.loss,
            kind="nll_jef",
            mse_warmup_epochs=warmup,
            force_weight=base.loss.force_weight if args.force_weight is None else args.force_weight,
        ),
        **overrides,
    )
    best = train(
        frames, None, preset(args.preset), train_config, args.work_dir, e0s=e0s, progress=True, device=device
    )
    model, payload = load_model(best)
    model.to(device if device is not None else "cpu")
    # training time and epochs from the run's own state, so a resumed benchmark reports the whole run
    state = json.loads(checkpoint.load(Path(args.work_dir) / "last.pt")["extra"]["train_state"]["state"])
    results = {
        "train_wall_s": state["elapsed"],
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "n_train": args.n_train,
        "device": str(device if device is not None else "cpu"),
        "train_config": train_config.to_dict(),
        "model_config": payload["config"],
        "model_hash": payload["hash"],
        "learning_curve": [
            {k: r[k] for k in ("epoch", "phase", "valid_loss", "energy_rmse", "forces_rmse")}
            for r in state["history"]
        ],
    }
    for name in ("300K", "600K"):
        m = evaluate(model, read_dataset(data / f"test_MD_{name}.xyz"))
        results[name] = {k: 1e3 * m[k] for k in ("energy_mae", "energy_rmse", "forces_mae", "forces_rmse")}
    return results


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def table(result: dict) -> str:
    lines = []
    if "300K" in result:
        lines += [
            "| model | 300K E RMSE (meV) | 300K F RMSE (meV/Å) | 600K E RMSE (meV) | 600K F RMSE (meV/Å) |",
            "| --- | --- | --- | --- | --- |",
        ]
        ours = [result[t][k] for t in ("300K", "600K") for k in ("energy_rmse", "forces_rmse")]
        lines.append(f"| RACE {result['preset']} (this run) | " + " | ".join(_fmt(v) for v in ours) + " |")
        for name, rows in PUBLISHED.items():
            vals = [v for t in ("300K", "600K") for v in rows[t]]
            lines.append(f"| {name} (arXiv:2206.07697) | " + " | ".join(_fmt(v) for v in vals) + " |")
        lines.append("")
        lines.append(
            f"MAE of this run: 300K E {_fmt(result['300K']['energy_mae'])} meV, F {_fmt(result['300K']['forces_mae'])} "
            f"meV/Å; 600K E {_fmt(result['600K']['energy_mae'])} meV, F {_fmt(result['600K']['forces_mae'])} meV/Å. "
            f"Trained {result['epochs_run']} epochs in {result['train_wall_s'] / 60:.1f} min on {result['n_train']} "
            f"structures (10 % held out), best epoch {result['best_epoch']}, on {result.get('device', 'cpu')}. "
            "Published models train for thousands of epochs on a GPU."
        )
    sp = result.get("speed")
    if sp:
        lines += [
            "",
            f"CPU speed, energy+forces of a {sp['n_atoms']}-atom periodic cell ({sp['cell']}), "
            f"{sp['threads']} thread(s), machine load average {sp['load_average_1min']:.1f} during timing:",
            "",
            "| model | latency per call (ms) | atoms/s |",
            "| --- | --- | --- |",
            f"| RACE {result['preset']} (ASE calculator) | {1e3 * sp['ours_latency_s']:.1f} | "
            f"{sp['ours_atoms_per_s']:.0f} |",
            f"| RACE {result['preset']} (16 cells per batch) | - | {sp['ours_batched16_atoms_per_s']:.0f} |",
        ]
        if "sevennet_latency_s" in sp:
            lines.append(
                f"| SevenNet-0 (ASE calculator) | {1e3 * sp['sevennet_latency_s']:.1f} | "
                f"{sp['sevennet_atoms_per_s']:.0f} |"
            )
            lines += ["", f"Speed-up over SevenNet-0: {sp['speedup_vs_sevennet']:.1f}x per call."]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import sys

    import torch

    from potentials.model import resolve_device
    from structures.common import check_section_name, device_section, write_bench_result

    if args.section is not None:
        check_section_name(args.section)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    result: dict = {"preset": args.preset}
    if not args.speed_only:
        result.update(accuracy(args, device))
    if device.type == "cpu":
        result["speed"] = speed(args.preset, n_calls=20, with_sevennet=not args.no_sevennet)
    result["published_reference"] = {
        "citation": "Batatia et al., MACE, NeurIPS 2022, arXiv:2206.07697",
        "rmse_meV_meV_per_A": PUBLISHED,
    }
    command = " ".join(["screen bench potential", *sys.argv[3:]])
    md = table(result)
    out = write_bench_result(args.section or device_section("potential", device), result, command, md)
    print(md)
    print(f"wrote {out}")
    return 0
