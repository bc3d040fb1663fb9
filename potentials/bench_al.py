"""``screen bench al``: active-learning curves (force MAE and NLL vs labels) for random / energy / BALD.

Protocol (preset ``paper``): start from 450 train + 50 validation structures, acquire N = 10, 20, 50, 100,
200 more, seeds 0..2, deep ensemble posterior.

* 3BPA: the start set is drawn from train_300K, the pool is train_mixedT minus a hot test set of
  ``hot_test`` structures held out of train_mixedT (a fixed split, the same for every seed).
* acac: pool = train_300K + train_600K, the start set is drawn from the pool, test = test_MD_300K +
  test_MD_600K.

Every (dataset, strategy, seed) run is an :class:`~potentials.active.ActiveLearner` in its own folder, so
the benchmark resumes after an interruption. All strategies of one seed share the start set and the round-0
model (same seeds). Targets: BALD reaches random sampling's final force MAE with <= 70 % of random's
*acquired* labels, and its final force MAE is below energy-uncertainty sampling's.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

DATASETS = ("3bpa", "acac")


@dataclass(frozen=True)
class BenchPreset:
    """Scale of the benchmark. start: initial labelled structures (10 % of them validate); schedule:
    cumulative acquired labels after each round; epochs None = the training preset's."""

    start: int
    schedule: tuple[int, ...]
    seeds: int
    hot_test: int
    model_preset: str
    train_preset: str
    epochs: int | None
    members: int
    lr: float | None = None
    batch_size: int | None = None
    ema_decay: float | None = None


PRESETS: dict[str, BenchPreset] = {
    "paper": BenchPreset(
        start=500,
        schedule=(10, 20, 50, 100, 200),
        seeds=3,
        hot_test=200,
        model_preset="small",
        train_preset="small",
        epochs=None,
        members=5,
    ),
    # 10x fewer start labels, N up to 40, a 3-member `tiny` ensemble, 30 epochs of batch 10: a shared 2-core CPU
    "cpu": BenchPreset(
        start=50,
        schedule=(10, 20, 40),
        seeds=3,
        hot_test=200,
        model_preset="tiny",
        train_preset="tiny",
        epochs=30,
        members=3,
        batch_size=10,
        ema_decay=0.9,
    ),
    # smoke test of the whole pipeline (minutes)
    "smoke": BenchPreset(
        start=12,
        schedule=(3, 6),
        seeds=2,
        hot_test=30,
        model_preset="tiny",
        train_preset="tiny",
        epochs=2,
        members=2,
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", default="cpu", choices=tuple(PRESETS), help="benchmark scale (default cpu)"
    )
    parser.add_argument("--datasets", default="3bpa,acac", help="comma-separated: 3bpa, acac")
    parser.add_argument(
        "--strategies",
        default="random,energy,bald",
        help="comma-separated acquisition strategies (bald = bald-ef, bald-e, bald-f, ...)",
    )
    parser.add_argument("--seeds", type=int, help="override the preset's number of seeds")
    parser.add_argument("--data", help="folder holding 3bpa/ and acac/ (default ../shared/data/botnet)")
    parser.add_argument("--work", default="runs/bench_al", help="run folders (resumable; git-ignored)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs in parallel (processes, 1 torch thread each)"
    )


def _data_root(arg: str | None):
    from pathlib import Path

    from structures.common import InputError

    candidates = (
        [arg]
        if arg
        else [
            os.environ.get("DACSCREEN_BOTNET"),
            str(Path.cwd().parent / "shared" / "data" / "botnet"),
            str(Path(__file__).resolve().parents[2] / "shared" / "data" / "botnet"),
        ]
    )
    for c in candidates:
        if c and (Path(c) / "3bpa").is_dir() and (Path(c) / "acac").is_dir():
            return Path(c)
    raise InputError(f"BOTNet data (3bpa/, acac/) not found in {arg or candidates[1]}; pass --data")


def load_dataset(name: str, root, preset: BenchPreset, seed: int):
    """(initial, pool, test) labelled Atoms lists for one dataset and seed (see the module doc)."""
    import numpy as np

    from potentials.data import read_dataset

    if name == "3bpa":
        start = read_dataset(root / "3bpa" / "train_300K.xyz")
        mixed = read_dataset(root / "3bpa" / "train_mixedT.xyz")
        order = np.random.default_rng(12345).permutation(len(mixed))  # fixed hot-test split
        test = [mixed[i] for i in order[: preset.hot_test]]
        pool = [mixed[i] for i in order[preset.hot_test :]]
        pick = np.random.default_rng([seed, 7]).permutation(len(start))[: preset.start]
        return [start[i] for i in sorted(pick)], pool, test
    pool = read_dataset(root / "acac" / "train_300K.xyz") + read_dataset(root / "acac" / "train_600K.xyz")
    test = read_dataset(root / "acac" / "test_MD_300K.xyz") + read_dataset(root / "acac" / "test_MD_600K.xyz")
    return None, pool, test


def _one_run(name: str, strategy: str, seed: int, preset: BenchPreset, root: str, work: str) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    from pathlib import Path

    from potentials.active import ActiveLearner, ALConfig, BayesFitter, PoolOracle

    initial, pool, test = load_dataset(name, Path(root), preset, seed)
    elements = tuple(sorted({s for a in pool + test + list(initial or []) for s in a.get_chemical_symbols()}))
    train_over = tuple(
        (k, v)
        for k, v in (
            ("epochs", preset.epochs),
            ("lr", preset.lr),
            ("batch_size", preset.batch_size),
            ("ema_decay", preset.ema_decay),
        )
        if v is not None
    )
    fitter = BayesFitter(
        method="ensemble",
        model_preset=preset.model_preset,
        train_preset=preset.train_preset,
        method_preset="tiny",
        elements=elements,
        train_overrides=train_over,
        method_overrides=(("members", preset.members),),
    )
    config = ALConfig(
        strategy=strategy,
        init=0 if initial else preset.start,
        schedule=preset.schedule,
        seed=seed,
        valid_fraction=0.1,
    )
    learner = ActiveLearner(
        pool,
        PoolOracle(pool, source=f"pool:{name}"),
        fitter,
        config,
        Path(work) / name / strategy / f"seed{seed}",
        test=test,
        initial=initial,
    )
    return learner.run()


def labels_to_reach(n: list[float], mae: list[float], target: float) -> float | None:
    """Smallest acquired-label count where the (linearly interpolated) curve ``mae(n)`` reaches ``target``."""
    for i, (ni, mi) in enumerate(zip(n, mae)):
        if mi <= target:
            if i == 0:
                return float(ni)
            n0, m0 = n[i - 1], mae[i - 1]
            return float(n0 + (m0 - target) / (m0 - mi) * (ni - n0)) if m0 != mi else float(ni)
    return None


def summarise(curves: dict[str, dict[str, dict[str, list]]]) -> dict[str, dict]:
    """Mean / std over seeds per dataset and strategy, and the target checks."""
    import numpy as np

    out: dict[str, dict] = {}
    for ds, by_strategy in curves.items():
        entry: dict[str, dict] = {"curves": {}}
        for strategy, c in by_strategy.items():
            mae, nll = np.array(c["forces_mae"]), np.array(c["forces_nll"])  # (seeds, points)
            entry["curves"][strategy] = {
                "n_acquired": c["n_acquired"],
                "seeds": len(mae),
                "forces_mae_mean": mae.mean(0).tolist(),
                "forces_mae_std": mae.std(0).tolist(),
                "forces_nll_mean": nll.mean(0).tolist(),
                "forces_nll_std": nll.std(0).tolist(),
            }
        cv = entry["curves"]
        bald = next((s for s in ("bald", "bald-ef", "bald-f", "bald-e") if s in cv), None)
        if "random" in cv and bald:
            n = cv["random"]["n_acquired"]
            target = cv["random"]["forces_mae_mean"][-1]
            # informative only when random sampling improved on the shared start model
            informative = target < min(cv[bald]["forces_mae_mean"][0], cv["random"]["forces_mae_mean"][0])
            need = (
                labels_to_reach(cv[bald]["n_acquired"], cv[bald]["forces_mae_mean"], target)
                if informative
                else None
            )
            frac = None if need is None else need / n[-1]
            entry["bald_strategy"] = bald
            entry["random_final_mae"] = target
            entry["random_improved"] = bool(informative)
            entry["bald_labels_to_match_random"] = need
            entry["bald_label_fraction"] = frac
            entry["target_70pct_met"] = bool(frac is not None and frac <= 0.7)
        if "energy" in cv and bald:
            entry["bald_beats_energy"] = bool(
                cv[bald]["forces_mae_mean"][-1] < cv["energy"]["forces_mae_mean"][-1]
            )
        out[ds] = entry
    return out


def _table(summary: dict[str, dict], preset_name: str, preset: BenchPreset) -> str:
    lines = [
        f"Preset `{preset_name}`: start {preset.start} labels ({int(round(preset.start * 0.9))} train + "
        f"{preset.start - int(round(preset.start * 0.9))} valid), acquire {', '.join(map(str, preset.schedule))}, "
        f"{preset.members}-member `{preset.model_preset}` ensemble, "
        f"{preset.epochs or 'preset'} epochs per fit (batch {preset.batch_size or 'preset'}), "
        f"scale recalibration on the validation set, mean ± std over seeds.",
        "",
    ]
    for ds, entry in summary.items():
        lines += [
            f"**{ds}**",
            "",
            "| strategy | N acquired | force MAE (eV/Å) | force NLL |",
            "|---|---|---|---|",
        ]
        for strategy, c in entry["curves"].items():
            for i, n in enumerate(c["n_acquired"]):
                lines.append(
                    f"| {strategy} | {n} | {c['forces_mae_mean'][i]:.4f} ± {c['forces_mae_std'][i]:.4f} | "
                    f"{c['forces_nll_mean'][i]:.3f} ± {c['forces_nll_std'][i]:.3f} |"
                )
        if "bald_label_fraction" in entry:
            frac = entry["bald_label_fraction"]
            frac_s = "never (within the budget)" if frac is None else f"{100 * frac:.0f} % of random's labels"
            if not entry["random_improved"]:
                frac_s = "- (random sampling did not improve on the start model: no test)"
            lines += [
                "",
                f"- {entry['bald_strategy']} reaches random's final force MAE "
                f"({entry['random_final_mae']:.4f} eV/Å) with {frac_s}: target <= 70 % "
                f"{'met' if entry['target_70pct_met'] else 'NOT met'}",
            ]
        if "bald_beats_energy" in entry:
            lines.append(
                f"- BALD beats energy-uncertainty sampling at the final label count: "
                f"{'yes' if entry['bald_beats_energy'] else 'NO'}"
            )
        lines.append("")
    return "\n".join(lines)


def _plot(summary: dict[str, dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(len(summary), 2, figsize=(9, 3.3 * len(summary)), squeeze=False)
    for row, (ds, entry) in enumerate(summary.items()):
        for col, (key, label) in enumerate(
            (("forces_mae", "force MAE (eV/Å)"), ("forces_nll", "force NLL (nats)"))
        ):
            ax = axes[row][col]
            for strategy, c in entry["curves"].items():
                n = np.array(c["n_acquired"])
                m, s = np.array(c[f"{key}_mean"]), np.array(c[f"{key}_std"])
                ax.plot(n, m, marker="o", label=strategy)
                ax.fill_between(n, m - s, m + s, alpha=0.2)
            ax.set_xlabel("acquired labels")
            ax.set_ylabel(label)
            ax.set_title(ds)
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    import time
    from dataclasses import replace
    from pathlib import Path

    from potentials.active import canonical_strategy
    from structures.common import InputError, write_bench_result

    preset = PRESETS[args.preset]
    if args.seeds is not None:
        if args.seeds < 1:
            raise InputError(f"--seeds {args.seeds} must be >= 1")
        preset = replace(preset, seeds=args.seeds)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    bad = [d for d in datasets if d not in DATASETS]
    if bad or not datasets:
        raise InputError(f"unknown dataset {','.join(bad) or '(none)'}; choose from {', '.join(DATASETS)}")
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for s in strategies:
        canonical_strategy(s)
    root = _data_root(args.data)
    jobs = [(d, s, seed) for d in datasets for seed in range(preset.seeds) for s in strategies]
    t0 = time.perf_counter()
    if args.jobs > 1:
        from joblib import Parallel, delayed

        histories = Parallel(n_jobs=args.jobs)(
            delayed(_one_run)(d, s, seed, preset, str(root), args.work) for d, s, seed in jobs
        )
    else:
        from tqdm import tqdm

        histories = [
            _one_run(d, s, seed, preset, str(root), args.work) for d, s, seed in tqdm(jobs, desc="al runs")
        ]
    wall = time.perf_counter() - t0
    curves: dict[str, dict[str, dict[str, list]]] = {}
    for (d, s, _), hist in zip(jobs, histories):
        c = curves.setdefault(d, {}).setdefault(s, {"forces_mae": [], "forces_nll": []})
        c["n_acquired"] = [h["n_acquired"] for h in hist]
        c["forces_mae"].append([h["test"]["forces_mae"] for h in hist])
        c["forces_nll"].append([h["test"]["forces_nll"] for h in hist])
    compute = sum(
        h.get("time_label_s", 0) + h.get("time_fit_s", 0) + h.get("time_acquire_s", 0)
        for hist in histories
        for h in hist
    )
    summary = summarise(curves)
    figure = Path("benchmarks") / "figures" / f"al_curves_{args.preset}.png"
    _plot(summary, figure)
    table = _table(summary, args.preset, preset) + (
        f"\nFigure: `{figure}`. Compute time summed over the {len(jobs)} runs (label + fit + acquire, "
        f"1 torch thread, shared CPU): {compute / 60:.0f} min; this invocation's wall time {wall / 60:.1f} min "
        f"(finished runs are reused).\n"
    )
    if args.preset != "paper":
        table += (
            "\nScaled down from the paper protocol (500 start labels, N up to 200, 5-member `small` "
            "ensembles) to fit a shared CPU; the numbers are not comparable with the paper's.\n"
        )
    cmd = f"screen bench al --preset {args.preset} --datasets {','.join(datasets)} --strategies {','.join(strategies)}"
    if args.seeds is not None:
        cmd += f" --seeds {args.seeds}"
    result = {
        "preset": args.preset,
        "protocol": {k: v for k, v in preset.__dict__.items()},
        "datasets": summary,
        "wall_s": wall,
        "compute_s": compute,
        "figure": str(figure),
    }
    write_bench_result("al", result, cmd, table)
    print(table)
    return 0
