"""One entry point for every Bayesian method: train, recalibrate on validation data, save.

``fit_posterior(method, train_atoms, valid_atoms, model_config, preset, out_dir)`` returns the posterior
and the path of ``out_dir/posterior.pt`` (loadable with :func:`potentials.bayes.load_posterior`).
Named presets: "paper" (the reference paper's settings: ensemble of 10; SWAG rank 40 every 2 epochs over
the last 60 %, 30 samples; IVON ess 48000, hess_init 0.5, beta2 0.999995, 16 samples; all-weight
diagonal Laplace with the exact GGN) and scaled-down CPU presets "cpu" and "tiny".
Heavy imports happen inside the functions, so the CLI can import this module cheaply.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

METHODS = ("point", "ensemble", "swag", "ivon", "laplace")
PRESET_NAMES = ("paper", "cpu", "tiny")
RECALIBRATIONS = ("scale", "isotonic", "none")


def method_config(method: str, preset: str = "cpu", **overrides: Any):
    """The method's config dataclass for a named preset, with fields replaced by ``overrides``."""
    from dataclasses import replace

    from structures.common import InputError

    if preset not in PRESET_NAMES:
        raise InputError(f"unknown Bayesian preset {preset!r}; choose from {', '.join(PRESET_NAMES)}")
    if method == "point":
        return None
    if method == "ensemble":
        from potentials.bayes.ensemble import PRESETS
    elif method == "swag":
        from potentials.bayes.swag import PRESETS
    elif method == "ivon":
        from potentials.bayes.ivon import PRESETS
    elif method == "laplace":
        from potentials.bayes.laplace import PRESETS
    else:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return replace(PRESETS[preset], **overrides)


def train_config_for(preset: str, **overrides: Any):
    """Training settings matching a Bayesian preset: "paper" = the 'small' training preset,
    "cpu" = 40 epochs (10 of MSE warm-up), "tiny" = the 'tiny' training preset."""
    from dataclasses import replace

    from potentials.losses import LossConfig
    from potentials.train import train_preset
    from structures.common import InputError

    if preset == "paper":
        cfg = train_preset("small")
    elif preset == "cpu":
        cfg = train_preset(
            "tiny",
            epochs=40,
            batch_size=4,
            lr=1e-2,
            ema_decay=0.9,
            plateau_patience=5,
            loss=LossConfig(kind="nll_jef", mse_warmup_epochs=10),
        )
    elif preset == "tiny":
        cfg = train_preset("tiny")
    else:
        raise InputError(f"unknown Bayesian preset {preset!r}; choose from {', '.join(PRESET_NAMES)}")
    return replace(cfg, **overrides)


def predict_dataset(
    posterior,
    atoms_list: Sequence | None = None,
    graphs: Sequence[dict] | None = None,
    batch_size: int = 16,
    n_samples: int | None = None,
) -> dict[str, Any]:
    """Predictions of ``posterior`` on labelled structures as flat numpy arrays.

    Keys: energy, energy_label (G,) eV; energy_var, energy_var_epi (G,) eV^2; forces, forces_label,
    forces_var, forces_var_epi (N, 3); num_atoms (G,); batch (N,) graph index; seconds (wall time).
    """
    import numpy as np
    import torch

    from potentials import keys as K
    from potentials.bayes.base import batches_of
    from potentials.data import atoms_to_graph

    if graphs is None:
        graphs = [atoms_to_graph(a, posterior.elements, posterior.cutoff) for a in atoms_list]
    dtype = getattr(posterior, "dtype", torch.get_default_dtype())
    parts: dict[str, list] = {
        k: []
        for k in (
            "energy",
            "energy_label",
            "energy_var",
            "energy_var_epi",
            "forces",
            "forces_label",
            "forces_var",
            "forces_var_epi",
            "num_atoms",
            "batch",
        )
    }
    t0, offset = time.perf_counter(), 0
    for batch in batches_of(list(graphs), batch_size, dtype):
        pred = posterior.predict(batch, n_samples=n_samples, forces=True)
        parts["energy"].append(pred.energy.detach().double().numpy())
        parts["energy_label"].append(batch[K.ENERGY].double().numpy())
        parts["energy_var"].append(pred.energy_var.detach().double().numpy())
        parts["energy_var_epi"].append(pred.energy_var_epistemic.detach().double().numpy())
        parts["forces"].append(pred.forces.detach().double().numpy())
        parts["forces_label"].append(batch[K.FORCES].double().numpy())
        parts["forces_var"].append(pred.forces_var.detach().double().numpy())
        parts["forces_var_epi"].append(pred.forces_var_epistemic.detach().double().numpy())
        parts["num_atoms"].append(batch[K.NUM_ATOMS].numpy())
        parts["batch"].append(batch[K.BATCH].numpy() + offset)
        offset += int(batch[K.NUM_ATOMS].numel())
    out: dict[str, Any] = {k: np.concatenate(v) for k, v in parts.items()}
    out["seconds"] = time.perf_counter() - t0
    return out


def fit_recalibration(posterior, valid_atoms: Sequence, kind: str = "scale", batch_size: int = 16):
    """Fit energy and force recalibrations of ``posterior`` (its raw, uncalibrated sigmas) on validation
    structures, store them on the posterior and return them (a RecalibrationPair)."""
    import numpy as np

    from potentials.bayes.base import RecalibrationPair
    from potentials.calibration import fit_recalibration as fit_one

    posterior.recal = RecalibrationPair()
    p = predict_dataset(posterior, valid_atoms, batch_size=batch_size)
    floor = 1e-30
    pair = RecalibrationPair(
        fit_one(p["energy_label"], p["energy"], np.sqrt(np.maximum(p["energy_var"], floor)), kind),
        fit_one(p["forces_label"], p["forces"], np.sqrt(np.maximum(p["forces_var"], floor)), kind),
    )
    posterior.recal = pair
    return pair


def _point_posterior(train_atoms, valid_atoms, model_config, train_config, out_dir, e0s, progress):
    from potentials import checkpoint
    from potentials.bayes.point import PointPosterior
    from potentials.train import train

    best = train(
        train_atoms,
        valid_atoms,
        model_config,
        train_config,
        Path(out_dir) / "point",
        progress=progress,
        e0s=e0s,
        method="point",
    )
    model, payload = checkpoint.load_model(best)
    from potentials.model import ModelConfig

    return PointPosterior(model, ModelConfig.from_dict(payload["config"]))


class _PointAdapter:
    """Gives a PointPosterior the ``recal`` attribute and ``save`` of the other posteriors."""

    def __init__(self, posterior):
        from potentials.bayes.base import RecalibrationPair

        self.inner = posterior
        self.recal = RecalibrationPair()
        for name in ("method", "elements", "cutoff", "dtype", "config", "model"):
            setattr(self, name, getattr(posterior, name))

    def mean_forward(self, batch, compute_stress=False):
        return self.inner.mean_forward(batch, compute_stress)

    def predict(self, batch, n_samples=None, forces=True):
        from potentials.bayes.base import recalibrate

        return recalibrate(self.inner.predict(batch, n_samples, forces), self.recal)

    def to(self, device):
        self.inner.to(device)
        return self

    def save(self, path):
        from potentials import checkpoint

        return checkpoint.save(
            path,
            self.inner.model,
            self.inner.config,
            method="point",
            calibration=self.recal.calibration_dict(),
            extra={"recalibration": self.recal.to_dict(), **checkpoint.provenance_extra(self)},
        )


def fit_posterior(
    method: str,
    train_atoms: Sequence,
    valid_atoms: Sequence | None,
    model_config,
    preset: str = "cpu",
    out_dir: str | os.PathLike = "posterior",
    *,
    train_config=None,
    config=None,
    e0s: dict[str, float] | None = None,
    recalibration: str = "scale",
    progress: bool = False,
    seed: int = 0,
    init_from: str | os.PathLike | None = None,
    device: Any = None,
    laplace_only: bool = False,
    replay_e0s_from: str | os.PathLike | None = None,
) -> tuple[Any, Path]:
    """Fit the posterior of ``method`` and write ``out_dir/posterior.pt``; returns (posterior, path).

    ``train_config`` / ``config`` default to the preset's (:func:`train_config_for`, :func:`method_config`).
    Without ``valid_atoms`` 10 % of the training structures are held out (seeded) for early stopping and
    for the recalibration (``recalibration``: "scale" | "isotonic" | "none"). Training is resumable: every
    method trains into sub-folders of ``out_dir``. Timings land in ``posterior.fit_seconds``.
    ``init_from``: a point checkpoint to fine-tune before the post-hoc Laplace fit (Laplace only: the other
    methods define their own training); with ``laplace_only`` that model is not fine-tuned, only fitted.
    ``device``: where the point network trains (the Laplace fit itself runs on the CPU).
    """
    import numpy as np

    from potentials.data import split_isolated
    from structures.common import InputError

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if recalibration not in RECALIBRATIONS:
        raise InputError(f"unknown recalibration {recalibration!r}; choose from {', '.join(RECALIBRATIONS)}")
    if init_from is not None and method != "laplace":
        raise InputError(f"--init-from works with --method point or laplace only, not {method!r}")
    if laplace_only and (method != "laplace" or init_from is None):
        raise InputError(
            "a Laplace fit without training needs method 'laplace' and a point model (init_from)"
        )
    if device is not None and str(device) != "cpu" and method not in ("point", "laplace"):
        raise InputError(
            f"--device {device} works with --method point or laplace; {method!r} trains on the cpu"
        )
    train_config = train_config or train_config_for(preset)
    config = config or method_config(method, preset)
    out_dir = Path(out_dir)
    structures, isolated = split_isolated(list(train_atoms))
    if not valid_atoms:
        if len(structures) < 2:
            raise InputError("need at least 2 training structures to hold one out for validation")
        perm = np.random.default_rng(seed).permutation(len(structures))
        n_valid = max(1, int(round(0.1 * len(structures))))
        valid_atoms = [structures[i] for i in perm[:n_valid]]
        structures = [structures[i] for i in perm[n_valid:]]
    train_atoms = structures + isolated
    args = (train_atoms, valid_atoms, model_config, train_config)
    t0 = time.perf_counter()
    if method == "point":
        posterior = _PointAdapter(_point_posterior(*args, out_dir, e0s, progress))
    elif method == "ensemble":
        from potentials.bayes.ensemble import fit_ensemble

        posterior = fit_ensemble(*args, config, out_dir, e0s=e0s, progress=progress)
    elif method == "swag":
        from potentials.bayes.swag import fit_swag

        posterior = fit_swag(*args, config, out_dir, e0s=e0s, progress=progress, seed=seed)
    elif method == "ivon":
        from potentials.bayes.ivon import fit_ivon

        posterior = fit_ivon(*args, config, out_dir, e0s=e0s, progress=progress, seed=seed)
    else:
        from potentials.bayes.laplace import fit_laplace

        posterior = fit_laplace(
            *args,
            config,
            out_dir,
            e0s=e0s,
            progress=progress,
            seed=seed,
            init_from=init_from,
            device=device,
            train=not laplace_only,
            replay_e0s_from=replay_e0s_from,
        )
    fit_seconds = time.perf_counter() - t0
    if recalibration != "none":
        fit_recalibration(posterior, valid_atoms, recalibration)
    posterior.fit_seconds = fit_seconds
    from potentials import checkpoint

    # provenance: hosts whose DFT labels trained, stopped or recalibrated it, and (set by the Laplace fit
    # from the point model it loaded) those that trained its starting point
    seen = checkpoint.dft_hosts_of([*train_atoms, *valid_atoms])
    posterior.dft_hosts = frozenset(seen | set(getattr(posterior, "dft_hosts", ())))
    path = out_dir / "posterior.pt"
    posterior.save(path)
    return posterior, path


# ---- CLI glue for ``screen train --method`` -------------------------------------------------------
def run_from_train_args(
    args, train_atoms, valid_atoms, model_config, train_config, e0s=None, device=None
) -> int:
    """Body of ``screen train --method M`` (M != point): fit, recalibrate, save, print one summary line.

    ``train_config`` None: Laplace fit of ``args.init_from`` without fine-tuning (``--epochs 0``).
    """
    structures = getattr(args, "laplace_structures", None)
    posterior, path = fit_posterior(
        args.method,
        train_atoms,
        valid_atoms,
        model_config,
        getattr(args, "bayes_preset", "cpu"),
        args.out,
        train_config=train_config,
        config=None
        if structures is None
        else method_config(args.method, getattr(args, "bayes_preset", "cpu"), max_structures=structures),
        replay_e0s_from=getattr(args, "replay_e0s_from", None),
        e0s=e0s,
        recalibration=getattr(args, "recalibration", "scale"),
        progress=not getattr(args, "quiet", False),
        seed=getattr(args, "seed", 0),
        init_from=getattr(args, "init_from", None),
        device=device,
        laplace_only=train_config is None,
    )
    rec = posterior.recal
    print(
        f"{args.method} posterior: {path} (recalibration sigma x{rec.energy.scale:.3g} energy, "
        f"x{rec.forces.scale:.3g} forces; fitted in {posterior.fit_seconds:.0f} s)"
    )
    from potentials import checkpoint

    line = checkpoint.dft_hosts_text(posterior.dft_hosts)
    if line:
        print(line)
    return 0
