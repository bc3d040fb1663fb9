"""``screen learn``: active learning (BALD / energy uncertainty / random) from a pool, resumable.

Pool-based (default): the pool's labels stay hidden until a structure is queried. Oracle-driven
(``--oracle emt|sevenn|ase:<module>:<Class>``): labels come from an ASE calculator, cached in
``OUT/labels.db`` with their provenance so nothing is computed twice. Re-run the same command to resume.
"""

from __future__ import annotations

import argparse

METHODS = ("ensemble", "swag", "ivon", "laplace", "point")
STRATEGY_CHOICES = ("bald", "bald-e", "bald-f", "bald-ef", "random", "energy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pool",
        required=True,
        nargs="+",
        help="candidate structures: extxyz / ASE .db / .traj files (e.g. relaxation trajectories)",
    )
    parser.add_argument(
        "--stride",
        type=int,
        default=1,
        help="with --oracle: keep every STRIDE-th frame of each pool file (plus its last)",
    )
    parser.add_argument("--out", required=True, help="run folder: state.json, labelled.extxyz, round_XXX/")
    parser.add_argument("--test", help="labelled test structures for errors and calibration after each round")
    parser.add_argument("--init", type=int, default=50, help="random initial labels (default 50)")
    parser.add_argument("--batch", type=int, default=25, help="labels acquired per round (default 25)")
    parser.add_argument("--rounds", type=int, default=10, help="acquisition rounds (default 10)")
    parser.add_argument(
        "--strategy",
        default="bald",
        choices=STRATEGY_CHOICES,
        help="acquisition: bald (= bald-ef), bald-e, bald-f, bald-ef, random, energy",
    )
    parser.add_argument(
        "--method", default="ensemble", choices=METHODS, help="Bayesian method (default ensemble)"
    )
    parser.add_argument(
        "--model-preset", default="small", help="model preset: tiny, small, large (default small)"
    )
    parser.add_argument(
        "--train-preset", default="small", help="training preset: tiny, small, large (default small)"
    )
    parser.add_argument(
        "--method-preset",
        default="cpu",
        help="the method's preset, e.g. ensemble tiny (3 members), cpu (5), paper (10)",
    )
    parser.add_argument("--epochs", type=int, help="override the training preset's epochs")
    parser.add_argument(
        "--oracle",
        help="label with a calculator: emt, sevenn, ase:<module>:<Class> "
        "(default: the pool's own labels, hidden until queried)",
    )
    parser.add_argument(
        "--calc-kwargs", default="{}", help="JSON keyword arguments for --oracle ase:... / sevenn"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--valid-fraction", type=float, default=0.1, help="part of the initial set for validation"
    )
    parser.add_argument("--n-samples", type=int, help="posterior samples per prediction (method default)")
    parser.add_argument(
        "--entropy",
        default="quadrature",
        choices=("quadrature", "moment"),
        help="BALD mixture entropy: numerical quadrature or the moment-matched upper bound",
    )
    parser.add_argument(
        "--force-reduce",
        default="mean",
        choices=("mean", "sum", "max"),
        help="BALD-F over the atoms of a structure (default mean)",
    )
    parser.add_argument(
        "--diversity-tol",
        type=float,
        default=0.05,
        help="relative fingerprint distance below which a candidate is a near-copy (0 = off)",
    )
    parser.add_argument("--energy-key", default="energy")
    parser.add_argument("--forces-key", default="forces")
    parser.add_argument("--no-progress", action="store_true")


def make_oracle(spec: str, calc_kwargs: str, cache: str):
    """A CalculatorOracle for ``emt`` | ``sevenn`` | ``ase:<module>:<Class>`` with its label cache."""
    import importlib
    import json

    from potentials.active import CalculatorOracle
    from structures.common import InputError

    try:
        kwargs = json.loads(calc_kwargs)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"bad --calc-kwargs {calc_kwargs!r}: not JSON ({exc.msg}); allowed: a JSON object"
        ) from exc
    if not isinstance(kwargs, dict):
        raise InputError(f"bad --calc-kwargs {calc_kwargs!r}; allowed: a JSON object")
    if spec == "emt":
        from ase.calculators.emt import EMT

        calc = EMT()
        return CalculatorOracle(
            lambda atoms: calc, "emt", {"ase": importlib.import_module("ase").__version__}, cache
        )
    if spec == "sevenn":
        try:
            from sevenn.calculator import SevenNetCalculator
        except ImportError as exc:
            raise InputError("SevenNet is not installed: run `pip install sevenn`") from exc
        settings = {"model": "7net-0", **kwargs}
        holder: dict[str, object] = {}

        def make(atoms):
            if "calc" not in holder:
                holder["calc"] = SevenNetCalculator(device="cpu", **settings)
            return holder["calc"]

        return CalculatorOracle(make, "sevenn", settings, cache)
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] != "ase" or not all(parts[1:]):
        raise InputError(f"unknown oracle {spec!r}; allowed: emt, sevenn, ase:<module>:<Class>")
    _, module, cls_name = parts
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"oracle {spec!r}: cannot load {cls_name} from {module} ({exc})") from exc
    return CalculatorOracle(lambda atoms: cls(**kwargs), spec, kwargs, cache)


def _history_csv(history: list[dict]) -> str:
    cols = [
        "round",
        "n_labels",
        "n_train",
        "forces_mae",
        "forces_rmse",
        "forces_nll",
        "energy_mae_per_atom",
        "forces_miscal_area",
        "forces_coverage_68",
        "time_fit_s",
    ]
    lines = [",".join(cols)]
    for rec in history:
        row = {**rec, **rec.get("test", {})}
        lines.append(
            ",".join(
                "" if row.get(c) is None else f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c])
                for c in cols
            )
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    import torch
    from ase.io import read

    from potentials.active import (
        AcquisitionConfig,
        ActiveLearner,
        ALConfig,
        BayesFitter,
        PoolOracle,
        canonical_strategy,
        harvest,
    )
    from potentials.data import read_dataset
    from structures.common import InputError, atomic_write_text

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    out = Path(args.out)
    if args.oracle:
        trajectories = []
        for path in args.pool:
            if not Path(path).is_file():
                raise InputError(f"pool file not found: {path}")
            try:
                frames = read(path, index=":", do_not_split_by_at_sign=True)
            except Exception as exc:  # noqa: BLE001 - ase raises many types
                raise InputError(f"cannot read pool {path}: {type(exc).__name__}") from exc
            trajectories.append(frames if isinstance(frames, list) else [frames])
        pool = harvest(trajectories, stride=args.stride)
        oracle = make_oracle(args.oracle, args.calc_kwargs, str(out / "labels.db"))
    else:
        pool = [a for path in args.pool for a in read_dataset(path, args.energy_key, args.forces_key)]
        oracle = PoolOracle(pool, source="pool:" + ",".join(Path(p).name for p in args.pool))
    test = read_dataset(args.test, args.energy_key, args.forces_key) if args.test else None
    acq = AcquisitionConfig(
        entropy=args.entropy, force_reduce=args.force_reduce, diversity_tol=args.diversity_tol
    )
    config = ALConfig(
        strategy=canonical_strategy(args.strategy),
        init=args.init,
        batch=args.batch,
        rounds=args.rounds,
        seed=args.seed,
        valid_fraction=args.valid_fraction,
        n_samples=args.n_samples,
        acquisition=acq,
    )
    elements = tuple(sorted({s for a in list(pool) + list(test or []) for s in a.get_chemical_symbols()}))
    overrides = (("epochs", args.epochs),) if args.epochs else ()
    fitter = BayesFitter(
        method=args.method,
        model_preset=args.model_preset,
        train_preset=args.train_preset,
        method_preset=args.method_preset,
        elements=elements,
        train_overrides=overrides,
    )
    learner = ActiveLearner(
        pool,
        oracle,
        fitter,
        config,
        out,
        test=test,
        log=lambda msg: print(msg, file=sys.stderr) if args.no_progress else None,
    )
    done = int(learner.state["round"])
    total = config.n_rounds + 1
    if learner.state["done"]:
        print(f"{out}: all {total} rounds already done", file=sys.stderr)
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=done, desc=f"learn {config.strategy}", unit="round", file=sys.stderr)

    def progress(r: int, n: int) -> None:
        if bar is not None:
            bar.update(1)
            rec = learner.history[-1]
            if "test" in rec:
                bar.set_postfix(labels=rec["n_labels"], fMAE=f"{rec['test']['forces_mae']:.4f}")

    try:
        history = learner.run(progress=progress)
    finally:
        if bar is not None:
            bar.close()
    atomic_write_text(out / "history.csv", _history_csv(history))
    print(_history_csv(history), end="")
    return 0
