"""``screen train``: train (or fine-tune) a RACE potential on labelled extxyz / ASE-db data."""

from __future__ import annotations

import argparse

PRESET_NAMES = ("tiny", "fast", "small", "large")
LOSSES = ("nll_jef", "mse", "nll_e")
# mirrors potentials.bayes.fit (kept here so `screen --help` never imports torch; a test checks they agree)
METHODS = ("point", "ensemble", "swag", "ivon", "laplace")
BAYES_PRESETS = ("paper", "cpu", "tiny")
RECALIBRATIONS = ("scale", "isotonic", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, help="training set (extxyz or ASE .db); isolated-atom frames give E0s"
    )
    parser.add_argument("--valid", help="validation set (default: hold out 10%% of --data)")
    parser.add_argument("--preset", default="small", choices=PRESET_NAMES, help="model and training preset")
    parser.add_argument("--out", required=True, help="output folder (last.pt, best.pt, history.json)")
    parser.add_argument("--energy-key", default="energy", help="info key of the total energy (eV)")
    parser.add_argument("--forces-key", default="forces", help="arrays key of the forces (eV/Å)")
    parser.add_argument("--stress-key", default=None, help="info key of the stress (eV/Å^3), optional")
    parser.add_argument(
        "--e0s", help="extxyz of isolated atoms with their energies (default: least-squares fit)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="number of epochs (default: the preset's; 0 with --method laplace --init-from: no fine-tuning, "
        "only the Laplace fit of that model)",
    )
    parser.add_argument("--batch-size", type=int, help="structures per batch (default: the preset's)")
    parser.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    parser.add_argument("--loss", choices=LOSSES, help="loss (default: nll_jef after an MSE warm-up)")
    parser.add_argument("--mse-warmup", type=int, help="epochs of plain MSE before the NLL loss")
    parser.add_argument(
        "--beta-nll",
        type=float,
        default=None,
        help="beta-NLL exponent in [0, 1] (0.5 is usual): weights each NLL term by its detached variance^beta "
        "so rare, hard frames cannot be 'explained away' by a large predicted variance (default: the preset's)",
    )
    parser.add_argument("--max-minutes", type=float, help="wall-time budget in minutes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float64", action="store_true", help="train in float64 (default float32)")
    parser.add_argument(
        "--max-force",
        type=float,
        default=None,
        help="leave out frames whose largest force component exceeds this, eV/Å (default: keep all)",
    )
    parser.add_argument(
        "--repulsion",
        choices=("zbl", "none"),
        default=None,
        help="short-range ZBL prior (no parameters; also switched on or off when fine-tuning with "
        "--init-from; default: the preset's, zbl)",
    )
    parser.add_argument(
        "--init-from", help="checkpoint to fine-tune (keeps its architecture; E0s too unless --refit-e0s)"
    )
    parser.add_argument(
        "--refit-e0s",
        action="store_true",
        help="with --init-from: first shift the per-element E0s to the new labels by least squares (labels "
        "of another code or functional, e.g. GPAW after SevenNet-0)",
    )
    parser.add_argument(
        "--trainable",
        default=None,
        help="comma list: train only parameters whose names contain one of these (e.g. readout), the "
        "rest frozen (default: all)",
    )
    add_replay_arguments(
        parser,
        "frames whose forces are replayed during fine-tuning, energies ignored (energy_weight 0), e.g. "
        "the pre-training set when fine-tuning on DFT: limits forgetting of the pre-training forces",
    )
    parser.add_argument("--no-resume", action="store_true", help="start over even if --out holds a run")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the network trains: cpu, cuda, cuda:N or auto (default cpu; checkpoints resume anywhere)",
    )
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="replay each training step from a captured CUDA graph (CUDA device; open molecules of one "
        "size, e.g. an MD trajectory; several times faster for launch-bound models, docs/gpu.md)",
    )
    add_method_arguments(parser)


def add_replay_arguments(parser: argparse.ArgumentParser, replay_help: str) -> None:
    """``--replay FILE`` and ``--replay-n N`` (potentials.data.replay_frames), shared with bench anchor."""
    parser.add_argument("--replay", default=None, help=replay_help)
    parser.add_argument(
        "--replay-n", type=int, default=60, help="structures drawn from --replay (seeded, default 60)"
    )
    parser.add_argument(
        "--replay-energies",
        default="none",
        choices=("none", "references", "all"),
        help="replay energies too, moved by the E0 re-fit: 'references' = every bulk-metal and pocket frame "
        "of --replay (added to the --replay-n drawn), so formation energies keep the pre-training reference's "
        "values; 'all' = every replayed frame (default none: forces only)",
    )
    parser.add_argument(
        "--replay-energy-weight",
        type=float,
        default=1.0,
        help="energy weight of the replayed energies, relative to the fine-tuning labels' (default 1)",
    )
    parser.add_argument(
        "--replay-weight",
        type=float,
        default=1.0,
        help="loss weight of each replayed frame (its forces and any replayed energy), relative to the "
        "fine-tuning labels' (default 1; below 1 the teacher's forces pull less where they disagree)",
    )


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    """``--method``, ``--bayes-preset`` and ``--recalibration`` (stdlib only, so ``screen --help`` stays fast)."""
    parser.add_argument(
        "--method",
        default="point",
        choices=METHODS,
        help="posterior: point model, deep ensemble, SWAG, IVON or Laplace (default point)",
    )
    parser.add_argument(
        "--bayes-preset",
        default="cpu",
        choices=BAYES_PRESETS,
        help="method settings: 'paper' defaults or the scaled-down 'cpu' / 'tiny' (default cpu)",
    )
    parser.add_argument(
        "--laplace-structures",
        type=int,
        default=None,
        help="structures of the training set in the Laplace Hessian and evidence (0 = all; default: the "
        "preset's, 200 for 'cpu'): a fine-tuning set of a few hundred frames fits whole",
    )
    parser.add_argument(
        "--replay-e0s-from",
        default=None,
        help="with --epochs 0: the checkpoint a fine-tuning started from, whose E0s the replayed energies "
        "(--replay-energies) are moved from to this model's, as the fine-tuning moved them",
    )
    parser.add_argument(
        "--recalibration",
        default="scale",
        choices=RECALIBRATIONS,
        help="variance recalibration fitted on the validation set (default scale)",
    )


def _cap_forces(frames: list, fmax: float) -> tuple[list, int]:
    """(frames whose max |F component| <= fmax eV/Å, how many were left out); frames without forces stay."""
    import numpy as np

    keep = []
    for a in frames:
        f = a.arrays.get("forces")  # read_dataset puts the labels here
        if f is None or float(np.abs(f).max(initial=0.0)) <= fmax:
            keep.append(a)
    return keep, len(frames) - len(keep)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from potentials import keys as K
    from potentials.data import read_dataset, read_e0s, replay_frames
    from potentials.model import preset, resolve_device
    from potentials.train import evaluate, train, train_preset
    from structures.common import InputError

    device = resolve_device(args.device)
    laplace_only = args.epochs == 0
    if laplace_only and not (args.method == "laplace" and args.init_from):
        raise InputError(
            "--epochs 0 is allowed only with --method laplace --init-from CHECKPOINT; allowed: >= 1"
        )

    if args.laplace_structures is not None and (args.method != "laplace" or args.laplace_structures < 0):
        raise InputError(
            f"--laplace-structures {args.laplace_structures} with --method {args.method}; allowed: an integer "
            ">= 0 (0 = all) with --method laplace"
        )
    if args.replay_e0s_from is not None:
        if not (laplace_only and args.replay and args.replay_energies != "none"):
            raise InputError(
                "--replay-e0s-from moves replayed energies in a Laplace refit; allowed only with --epochs 0 "
                "--method laplace --init-from and --replay with --replay-energies references or all"
            )
        from potentials.checkpoint import load as load_checkpoint

        load_checkpoint(args.replay_e0s_from)  # one-line error for a missing or foreign file before any work
    keys = {"energy_key": args.energy_key, "forces_key": args.forces_key, "stress_key": args.stress_key}
    train_atoms = read_dataset(args.data, **keys)
    valid_atoms = read_dataset(args.valid, **keys) if args.valid else None
    e0s = read_e0s(args.e0s, energy_key=args.energy_key) if args.e0s else None
    replayed = (
        replay_frames(
            args.replay,
            args.replay_n,
            args.seed,
            energies=args.replay_energies,
            energy_weight=args.replay_energy_weight,
            weight=args.replay_weight,
            **keys,
        )
        if args.replay
        else []
    )
    if args.max_force is not None:
        if not args.max_force > 0:
            raise InputError(f"--max-force {args.max_force} is not allowed; allowed: > 0 eV/Å")
        train_atoms, n_tr = _cap_forces(train_atoms, args.max_force)
        valid_atoms, n_va = _cap_forces(valid_atoms, args.max_force) if valid_atoms else (valid_atoms, 0)
        replayed, n_rp = _cap_forces(replayed, args.max_force)
        print(
            f"--max-force {args.max_force:g} eV/Å: left out {n_tr} training, {n_va} validation and {n_rp} "
            "replay frames"
        )
    if args.refit_e0s and not args.init_from:
        raise InputError("--refit-e0s re-references a pre-trained model; it needs --init-from CHECKPOINT")
    if args.init_from:  # fine-tuning keeps the model's elements: name the file that brings another one
        from potentials.checkpoint import load

        known = list(load(args.init_from)["elements"])
        for path, frames in (
            (args.data, train_atoms),
            (args.valid, valid_atoms or []),
            (args.replay, replayed),
        ):
            unknown = sorted({s for a in frames for s in a.get_chemical_symbols()} - set(known))
            if unknown:
                raise InputError(
                    f"{path} has element(s) {', '.join(unknown)} that the model {args.init_from} does not know; "
                    f"it knows {', '.join(known)}"
                )
    if replayed:
        n_e = sum(K.SHIFTED_ENERGY_WEIGHT in a.info for a in replayed)
        print(
            f"--replay: {len(replayed)} frames of {args.replay} train their forces"
            + (f"; {n_e} their energies moved by the E0 re-fit" if n_e else " only (energy_weight 0)")
        )
        if valid_atoms is None:  # hold out validation frames from --data alone, never replay frames
            from potentials.data import split_isolated
            from potentials.train import split_validation

            structures, isolated = split_isolated(train_atoms)
            train_atoms, valid_atoms = split_validation(structures, 0.1, args.seed)
            train_atoms += isolated
        train_atoms = train_atoms + replayed
    model_config = preset(args.preset, dtype="float64" if args.float64 else "float32")
    if args.repulsion is not None:
        model_config = replace(model_config, repulsion=args.repulsion)
    overrides = {
        k: v
        for k, v in (
            ("epochs", None if laplace_only else args.epochs),
            ("batch_size", args.batch_size),
            ("lr", args.lr),
            ("max_minutes", args.max_minutes),
        )
        if v is not None
    }
    train_config = train_preset(args.preset, seed=args.seed, **overrides)
    loss = train_config.loss
    if args.loss is not None:
        loss = replace(loss, kind=args.loss)
    if args.mse_warmup is not None:
        if args.mse_warmup < 0:
            raise InputError(f"--mse-warmup {args.mse_warmup} must be >= 0")
        loss = replace(loss, mse_warmup_epochs=args.mse_warmup)
    if args.beta_nll is not None:
        if not 0.0 <= args.beta_nll <= 1.0:
            raise InputError(f"--beta-nll {args.beta_nll} is not allowed; allowed: 0 to 1")
        loss = replace(loss, beta=args.beta_nll)
    if args.stress_key:
        loss = replace(loss, stress_weight=max(loss.stress_weight, 1.0))
    trainable = tuple(t.strip() for t in (args.trainable or "").split(",") if t.strip())
    train_config = replace(train_config, loss=loss, refit_e0s=args.refit_e0s, trainable=trainable)
    if args.cuda_graphs and args.method != "point":
        raise InputError(f"--cuda-graphs works with --method point only, not {args.method!r}")
    if args.method != "point":
        if args.init_from and args.method != "laplace":
            raise InputError(f"--init-from works with --method point or laplace only, not {args.method!r}")
        from potentials.bayes.fit import run_from_train_args

        return run_from_train_args(
            args, train_atoms, valid_atoms, model_config, None if laplace_only else train_config, e0s, device
        )
    best = train(
        train_atoms,
        valid_atoms,
        model_config,
        train_config,
        args.out,
        resume=not args.no_resume,
        progress=not args.quiet,
        e0s=e0s,
        init_from=args.init_from,
        device=device,
        cuda_graphs=args.cuda_graphs,
    )
    from potentials.checkpoint import load_model

    model, payload = load_model(best)
    if valid_atoms:
        m = evaluate(model, valid_atoms)
        print(
            f"validation: E MAE {1e3 * m['energy_mae']:.2f} meV, F MAE {1e3 * m['forces_mae']:.1f} meV/Å "
            f"({m['n_structures']} structures)"
        )
    print(f"best model: {best} (hash {payload['hash'][:12]})")
    from potentials.checkpoint import dft_hosts, dft_hosts_text

    trained_on = dft_hosts_text(dft_hosts(payload))
    if trained_on:
        print(trained_on)
    return 0
