"""Training loop for RACE potentials: E0s, normalisation, AdamW, EMA, early stopping, resumable checkpoints.

``train(...)`` writes ``out_dir/last.pt`` (every epoch: EMA weights + full training state) and
``out_dir/best.pt`` (EMA weights with the best validation loss of the current loss phase) and returns
the path of ``best.pt``. Kill it at any time and call it again with the same arguments: it resumes
from the last finished epoch and reaches the same weights as an uninterrupted run (shuffling is
seeded per epoch). Bayesian methods reuse it through ``optimizer_factory`` and ``on_epoch_end``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from potentials import checkpoint
from potentials import keys as K
from potentials.data import (
    atoms_to_graph,
    avg_num_neighbors,
    collate_graphs,
    energy_label,
    fit_e0s,
    per_element_fit,
    scaling_statistics,
    split_isolated,
)
from potentials.graph_step import portable_optimizer_state, set_group_lr
from potentials.losses import LossConfig, active_kind, compute_loss
from potentials.model import DTYPES, ModelConfig, build_model
from structures.common import InputError, atomic_write_text

SCHEDULERS = ("plateau", "cosine", "none")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Learning rates are AdamW's; times in minutes."""

    epochs: int = 200
    batch_size: int = 8
    valid_batch_size: int = 32
    lr: float = 5e-3
    weight_decay: float = 5e-7
    scheduler: str = "plateau"  # "plateau" (ReduceLROnPlateau on valid loss) | "cosine" | "none"
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    min_lr: float = 1e-5
    ema_decay: float = 0.99  # 0 disables the exponential moving average of the weights
    early_stopping_patience: int = 40  # epochs without improvement of the valid loss
    grad_clip: float = 10.0  # max gradient norm, 0 = off
    valid_fraction: float = 0.1  # used when no validation set is given
    max_minutes: float = 0.0  # wall-time budget, 0 = none (stops after the epoch that exceeds it)
    seed: int = 0
    loss: LossConfig = field(default_factory=LossConfig)
    # fine-tuning on another fidelity (issue 10): re-fit the per-element E0s of the init_from model to the
    # new labels first (least squares of label - prediction vs composition), so the network only has to
    # learn what differs beyond a per-element reference shift
    refit_e0s: bool = False
    # names of the parameters to train (a parameter trains when its name contains one of these strings);
    # empty = all. E.g. ("readout",) fine-tunes only the per-layer readouts on a few expensive labels.
    trainable: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "trainable", tuple(self.trainable))
        if self.scheduler not in SCHEDULERS:
            raise InputError(f"unknown scheduler {self.scheduler!r}; choose from {', '.join(SCHEDULERS)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError("epochs and batch_size must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        loss = LossConfig(**data.pop("loss", {}))
        return cls(**data, loss=loss)


TRAIN_PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(
        epochs=6,
        batch_size=4,
        lr=1e-2,
        ema_decay=0.5,
        early_stopping_patience=100,
        loss=LossConfig(kind="nll_jef", mse_warmup_epochs=2),
    ),
    "fast": TrainConfig(
        epochs=200, batch_size=8, lr=1e-2, loss=LossConfig(kind="nll_jef", mse_warmup_epochs=60)
    ),
    "small": TrainConfig(
        epochs=300, batch_size=5, lr=1e-2, loss=LossConfig(kind="nll_jef", mse_warmup_epochs=100)
    ),
    "large": TrainConfig(
        epochs=1000,
        batch_size=5,
        lr=1e-2,
        plateau_patience=20,
        early_stopping_patience=80,
        loss=LossConfig(kind="nll_jef", mse_warmup_epochs=300),
    ),
}


def train_preset(name: str, **overrides: Any) -> TrainConfig:
    if name not in TRAIN_PRESETS:
        raise InputError(f"unknown training preset {name!r}; choose from {', '.join(TRAIN_PRESETS)}")
    return replace(TRAIN_PRESETS[name], **overrides)


# ---- exponential moving average ----------------------------------------------------------------
class EMA:
    """Shadow copy w_ema <- d w_ema + (1 - d) w of the floating-point parameters."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for n, p in model.named_parameters():
            self.shadow[n].mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)

    @contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Temporarily load the EMA weights into ``model``."""
        if self.decay <= 0:
            yield model
            return
        backup = {n: p.detach().clone() for n, p in model.named_parameters()}
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(self.shadow[n])
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(backup[n])


# ---- evaluation --------------------------------------------------------------------------------
def _batches(
    graphs: Sequence[dict], batch_size: int, order: Sequence[int] | None = None
) -> Iterator[list[dict]]:
    order = range(len(graphs)) if order is None else order
    order = list(order)
    for start in range(0, len(order), batch_size):
        yield [graphs[i] for i in order[start : start + batch_size]]


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def evaluate(
    model: torch.nn.Module,
    atoms_list: Sequence,
    batch_size: int = 32,
    graphs: Sequence[dict] | None = None,
    return_predictions: bool = False,
    loss_config: LossConfig | None = None,
    epoch: int | None = None,
) -> dict[str, Any]:
    """Energy (eV, eV/atom) and force (eV/Å, per component) MAE/RMSE of ``model`` on labelled structures.

    ``graphs`` (from :func:`potentials.data.atoms_to_graph`) may be passed to skip neighbour lists.
    With ``return_predictions`` the per-structure energies and energy variances are included; with
    ``loss_config`` the structure-weighted mean loss (at ``epoch``) as ``loss``, from the same pass.
    Energy errors skip structures with ``energy_weight`` 0 (NaN when none is left).
    """
    config = model.config
    if graphs is None:
        graphs = [atoms_to_graph(a, config.elements, config.cutoff) for a in atoms_list]
    dtype = _model_dtype(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    e_err, e_pa_err, f_err, e_pred, e_var = [], [], [], [], []
    loss_sum = 0.0
    for chunk in _batches(graphs, batch_size):
        batch = collate_graphs(chunk, dtype=dtype, device=device)
        stress = loss_config is not None and _wants_stress(batch, loss_config)
        out = model(batch, compute_forces=True, compute_stress=stress, create_graph=False)
        if loss_config is not None:
            loss_sum += float(compute_loss(out, batch, loss_config, epoch)[0].detach()) * len(chunk)
        diff = (out[K.ENERGY] - batch[K.ENERGY]).detach()
        counts = batch[K.ENERGY_WEIGHT] > 0 if K.ENERGY_WEIGHT in batch else torch.ones_like(diff, dtype=bool)
        e_err.append(diff[counts])  # energies on another reference (energy_weight 0) are not errors
        e_pa_err.append((diff / batch[K.NUM_ATOMS])[counts])
        f_err.append((out[K.FORCES] - batch[K.FORCES]).detach().reshape(-1).double())
        e_pred.append(out[K.ENERGY].detach())
        e_var.append(out[K.ENERGY_VAR].detach().double())
    model.train(was_training)
    e, epa, f = torch.cat(e_err), torch.cat(e_pa_err), torch.cat(f_err)
    metrics: dict[str, Any] = {
        "n_structures": len(graphs),
        "energy_mae": float(e.abs().mean()),
        "energy_rmse": float(e.pow(2).mean().sqrt()),
        "energy_per_atom_mae": float(epa.abs().mean()),
        "energy_per_atom_rmse": float(epa.pow(2).mean().sqrt()),
        "forces_mae": float(f.abs().mean()),
        "forces_rmse": float(f.pow(2).mean().sqrt()),
    }
    if loss_config is not None:
        metrics["loss"] = loss_sum / max(len(graphs), 1)
    if return_predictions:
        metrics["energy_pred"] = torch.cat(e_pred).tolist()
        metrics["energy_var"] = torch.cat(e_var).tolist()
    return metrics


def _wants_stress(batch: dict[str, torch.Tensor], loss_cfg: LossConfig) -> bool:
    return loss_cfg.stress_weight > 0 and K.STRESS in batch and bool(batch[K.PBC].all())


# ---- setup -------------------------------------------------------------------------------------
def _elements_of(atoms_lists: Sequence[Sequence]) -> tuple[str, ...]:
    from ase.data import atomic_numbers

    symbols = {s for atoms_list in atoms_lists for a in atoms_list for s in a.get_chemical_symbols()}
    return tuple(sorted(symbols, key=lambda s: atomic_numbers[s]))


def prepare_config(
    model_config: ModelConfig,
    train_atoms: Sequence,
    e0s: dict[str, float] | None = None,
    isolated: Sequence = (),
) -> ModelConfig:
    """Fill elements, E0s, avg_num_neighbors, scale (force RMS, eV) and shift (eV/atom) from the data.

    E0s: ``e0s`` if given, else isolated-atom frames, else a least-squares fit of energy vs composition.
    """
    elements = model_config.elements or _elements_of([train_atoms, isolated])
    if e0s is None and isolated:
        e0s = {a[0].symbol: float(energy_label(a)) for a in isolated if energy_label(a) is not None}
        fitted = fit_e0s(train_atoms, elements) if set(elements) - set(e0s) else {}
        e0s = {s: e0s.get(s, fitted.get(s, 0.0)) for s in elements}
    if e0s is None:
        e0s = fit_e0s(train_atoms, elements)
    missing = [s for s in elements if s not in e0s]
    if missing:
        raise InputError(f"no E0 for element(s) {', '.join(missing)}; the E0 file has {', '.join(e0s)}")
    stats = scaling_statistics(train_atoms, elements, e0s)
    scale = stats["forces_rms"] if stats["forces_rms"] > 1e-8 else max(stats["energy_per_atom_std"], 1e-3)
    return replace(
        model_config,
        elements=tuple(elements),
        e0s=tuple(float(e0s[s]) for s in elements),
        avg_num_neighbors=avg_num_neighbors(train_atoms, model_config.cutoff),
        scale=float(scale),
        shift=float(stats["energy_per_atom_mean"]),
    ).validate()


def split_validation(train_atoms: list, fraction: float, seed: int) -> tuple[list, list]:
    """(training, validation) lists: a seeded ``fraction`` (at least 1) of ``train_atoms`` held out."""
    n_valid = max(1, int(round(fraction * len(train_atoms))))
    if len(train_atoms) < 2:
        raise InputError("need at least 2 training structures to hold one out for validation")
    perm = np.random.default_rng(seed).permutation(len(train_atoms))
    return [train_atoms[i] for i in perm[n_valid:]], [train_atoms[i] for i in perm[:n_valid]]


def _make_scheduler(optimizer, cfg: TrainConfig):
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
        )
    # "cosine" is set per epoch by _cosine_lr (it follows the time budget too); "none" keeps the rate
    return None


def _cosine_lr(base_lr: float, cfg: TrainConfig, epochs_done: int, elapsed_s: float) -> float:
    """Cosine decay from ``base_lr`` to ``cfg.min_lr`` over whichever runs out first: the epochs or the
    wall-time budget (``max_minutes``), so a budget-limited run still ends at the small learning rate."""
    progress = epochs_done / cfg.epochs
    if cfg.max_minutes > 0:
        progress = max(progress, elapsed_s / (60.0 * cfg.max_minutes))
    return cfg.min_lr + 0.5 * (base_lr - cfg.min_lr) * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def default_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on weight matrices only (not on 1-D parameters); frozen ones left out."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, amsgrad=True)


def refit_e0s(
    model: torch.nn.Module, config: ModelConfig, atoms_list: Sequence, graphs: Sequence[dict] | None = None
) -> ModelConfig:
    """Shift the model's per-element E0s (eV) by the least-squares fit of (label - prediction) against
    composition on ``atoms_list``, in place, and return the config with the new E0s.

    Used when fine-tuning on labels of another fidelity (e.g. GPAW after SevenNet-0): total energies of two
    codes differ by per-element constants, which this removes before any weight moves. Elements absent
    from the data keep their E0; an under-determined fit takes the minimum-norm shift. Frames with
    ``energy_weight`` 0 (energies on another reference) are left out of the fit."""
    structures, isolated = split_isolated(list(atoms_list))
    if graphs is None or len(graphs) != len(structures):
        graphs = [atoms_to_graph(a, config.elements, config.cutoff) for a in structures]
    keep = [float(a.info.get(K.ENERGY_WEIGHT, 1.0)) > 0 for a in structures]
    structures = [a for a, k in zip(structures, keep) if k]
    graphs = [g for g, k in zip(graphs, keep) if k]
    isolated = [a for a in isolated if float(a.info.get(K.ENERGY_WEIGHT, 1.0)) > 0]
    old = np.asarray(config.e0s or [0.0] * len(config.elements), float)
    e0_now = dict(zip(config.elements, old))
    pred = (
        evaluate(model, structures, graphs=graphs, return_predictions=True)["energy_pred"]
        if structures
        else []
    )
    pred = list(pred) + [e0_now[a[0].symbol] for a in isolated]  # a lone atom's energy is its E0
    frames = list(structures) + list(isolated)
    residual = np.array([energy_label(a) for a in frames], float) - np.asarray(pred, float)
    new = tuple(float(v) for v in old + per_element_fit(frames, config.elements, residual))
    inner = getattr(model, "model", model)
    with torch.no_grad():
        inner.e0.copy_(torch.as_tensor(new, dtype=inner.e0.dtype))
    return replace(config, e0s=new)


def shift_replay_energies(
    graphs: Sequence[dict], old_e0s: Sequence[float] | None, new_e0s: Sequence[float] | None
) -> int:
    """Move the energy label of every graph that carries ``K.SHIFTED_ENERGY_WEIGHT`` (a replay frame on the
    pre-trained model's reference) by the E0 re-fit, sum over its atoms of (new - old) E0 (eV), and make
    that weight its energy weight; in place. Returns how many graphs moved.

    The re-fit is a per-element change of reference, so a formation energy (host - pocket - bulk metals,
    the same atoms on both sides) computed from shifted labels is the pre-training reference's own."""
    n_el = len(new_e0s or old_e0s or [])
    old = torch.as_tensor(old_e0s if old_e0s else [0.0] * n_el, dtype=torch.float64)
    new = torch.as_tensor(new_e0s if new_e0s else [0.0] * n_el, dtype=torch.float64)
    moved = 0
    for g in graphs:
        w = g.get(K.SHIFTED_ENERGY_WEIGHT)
        if w is None or K.ENERGY not in g:
            continue
        g[K.ENERGY] = g[K.ENERGY] + (new - old)[g[K.SPECIES]].sum()
        g[K.ENERGY_WEIGHT] = w.clone()
        moved += 1
    return moved


def freeze_parameters(model: torch.nn.Module, trainable: Sequence[str]) -> None:
    """Train only the parameters whose names contain one of ``trainable`` (all when empty). An entry that
    matches no parameter is an error."""
    names = [n for n, _ in model.named_parameters()]
    for t in trainable:
        if not any(t in n for n in names):
            roots = sorted({n.split(".")[1] if n.startswith("model.") else n.split(".")[0] for n in names})
            raise InputError(f"trainable {t!r} matches no parameter; parameter groups: {', '.join(roots)}")
    for n, p in model.named_parameters():
        p.requires_grad_(not trainable or any(t in n for t in trainable))


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    """Text like " (at model.e0s.0: -8.1 != -8.2)" for the first entry where ``a`` and ``b`` differ; "" if
    none. Floats agree within a relative 1e-7: E0s re-fitted by least squares differ in the last bits with the
    BLAS thread count (session 12: a fine-tuning run refused to resume under OMP_NUM_THREADS=2 after 1)."""
    if isinstance(a, float) and isinstance(b, float):
        same = abs(a - b) <= 1e-7 * max(abs(a), abs(b), 1e-300)
        return "" if same else f" (at {path.rstrip('.')}: {a} != {b})"
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f" (at {path}{k}: only in one run)"
            d = _first_difference(a[k], b[k], f"{path}{k}.")
            if d:
                return d
        return ""
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{path}{i}.")
            if d:
                return d
        return ""
    return "" if a == b else f" (at {path.rstrip('.')}: {str(a)[:40]} != {str(b)[:40]})"


def _settings_key(model_config: ModelConfig, train_config: TrainConfig, n_train: int, n_valid: int) -> str:
    """What a resumed run must share with the saved one (compared by :func:`_first_difference`)."""
    return json.dumps(
        {"model": model_config.to_dict(), "train": train_config.to_dict(), "n": [n_train, n_valid]},
        sort_keys=True,
    )


def _to_cpu(obj: Any) -> Any:
    """``obj`` (nested dicts / lists of tensors, e.g. an optimizer state) with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


# ---- the loop ----------------------------------------------------------------------------------
def train(
    train_atoms: Sequence,
    valid_atoms: Sequence | None,
    model_config: ModelConfig,
    train_config: TrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    e0s: dict[str, float] | None = None,
    init_from: str | Path | None = None,
    optimizer_factory: Callable[[torch.nn.Module], torch.optim.Optimizer] | None = None,
    on_epoch_end: Callable[[int, torch.nn.Module], bool | None] | None = None,
    method: str = "point",
    device: str | torch.device | None = None,
    cuda_graphs: bool = False,
) -> Path:
    """Train a RACE potential and return the path of its best checkpoint (``out_dir/best.pt``).

    train_atoms / valid_atoms: labelled ASE Atoms (energy eV, forces eV/Å); isolated-atom frames in
    ``train_atoms`` give E0s. ``init_from``: fine-tune from a checkpoint (its architecture, E0s and
    normalisation are kept; the parameter-free ``repulsion`` prior comes from ``model_config``). ``optimizer_factory(model)`` replaces AdamW (an optimizer with
    ``sampled_params`` such as IVON is stepped inside that context). ``on_epoch_end(epoch, model)``
    runs after each epoch with the raw (non-EMA) model; returning True stops training. ``device``: where
    the model trains (default cpu; checkpoints are always written on the CPU, so a run started on a GPU
    resumes anywhere). ``cuda_graphs``: replay each training step from a captured CUDA graph
    (:mod:`potentials.graph_step`; needs a CUDA device and open molecules of one size); the validation,
    the checkpoints and the result are those of an eager run, so a run may resume in either mode.
    """
    cfg = train_config
    out_dir = Path(out_dir)
    torch.manual_seed(cfg.seed)
    train_atoms, isolated = split_isolated(list(train_atoms))
    if not train_atoms:
        raise InputError("no training structures (only isolated atoms)")
    valid_atoms = list(valid_atoms) if valid_atoms else []
    if not valid_atoms:
        train_atoms, valid_atoms = split_validation(train_atoms, cfg.valid_fraction, cfg.seed)

    init_payload = checkpoint.load(init_from) if init_from else None
    # hosts whose DFT labels this model sees (validation frames steer early stopping) or its start had seen
    seen_dft = sorted(
        checkpoint.dft_hosts_of([*train_atoms, *valid_atoms]) | checkpoint.dft_hosts(init_payload)
    )
    if init_payload is not None:
        base = ModelConfig.from_dict(init_payload["config"])
        # the parameter-free repulsion prior follows the requested config (it adds no weights to load)
        model_config = replace(base, dtype=model_config.dtype, repulsion=model_config.repulsion)
    else:
        model_config = prepare_config(model_config, train_atoms, e0s=e0s, isolated=isolated)
    dtype = DTYPES[model_config.dtype]
    torch.manual_seed(cfg.seed)
    model = build_model(model_config)
    if init_payload is not None:
        model.load_state_dict(init_payload["state_dict"])  # copy_ casts to the model dtype
    elements, cutoff = model_config.elements, model_config.cutoff
    train_graphs = [atoms_to_graph(a, elements, cutoff) for a in train_atoms]
    valid_graphs = [atoms_to_graph(a, elements, cutoff) for a in valid_atoms]
    device = torch.device(device if device is not None else "cpu")
    model.to(device)
    for name, graphs in (("training", train_graphs), ("validation", valid_graphs)):
        if any(K.ENERGY not in g or K.FORCES not in g for g in graphs):
            raise InputError(f"every {name} structure needs energy and forces labels")
    old_e0s = model_config.e0s
    if cfg.refit_e0s:
        if init_payload is None:
            raise InputError("refit_e0s re-references a pre-trained model: it needs init_from")
        model_config = refit_e0s(model, model_config, train_atoms + isolated, train_graphs)
    shift_replay_energies(train_graphs, old_e0s, model_config.e0s)  # no re-fit: weights only, no shift
    freeze_parameters(model, cfg.trainable)
    if cuda_graphs:
        from .graph_step import static_graphs

        if device.type != "cuda":
            raise InputError(f"--cuda-graphs needs a CUDA device, got {device}")
        if optimizer_factory is not None:
            raise InputError(
                "--cuda-graphs trains with the default AdamW only (not IVON or another optimizer)"
            )
        train_graphs = static_graphs(train_graphs)

    optimizer = optimizer_factory(model) if optimizer_factory else default_optimizer(model, cfg)
    scheduler = _make_scheduler(optimizer, cfg)
    ema = EMA(model, cfg.ema_decay)
    settings = _settings_key(model_config, cfg, len(train_graphs), len(valid_graphs))
    state: dict[str, Any] = {
        "epoch": 0,
        "best": math.inf,
        "best_epoch": -1,
        "bad_epochs": 0,
        "phase": "",
        "elapsed": 0.0,
        "history": [],
    }
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if resume and last_path.exists():
        saved = checkpoint.load(last_path)["extra"].get("train_state")
        where = (
            "" if saved is None else _first_difference(json.loads(saved["settings"]), json.loads(settings))
        )
        if saved is None or where:
            raise InputError(
                f"{out_dir} holds a run with other settings or data{where}; use a new output folder"
            )
        model.load_state_dict(saved["raw_state_dict"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        ema.shadow = {k: v.to(device) for k, v in saved["ema"].items()}
        state = json.loads(saved["state"])
    if cuda_graphs:
        from .graph_step import make_capturable

        make_capturable(optimizer, device)
    stepper = None  # the captured step of the current loss phase
    atomic_write_text(out_dir / "config.json", json.dumps(json.loads(settings), indent=2) + "\n")

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs, initial=state["epoch"], desc="train", unit="epoch")
    t_start = time.perf_counter() - state["elapsed"]
    stop = state["epoch"] >= cfg.epochs
    while not stop:
        epoch = state["epoch"]
        phase = active_kind(cfg.loss, epoch)
        if phase != state["phase"]:  # the loss changed (end of MSE warm-up): best values are not comparable
            state.update(phase=phase, best=math.inf, bad_epochs=0)
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.best, scheduler.num_bad_epochs = scheduler.mode_worse, 0
        order = torch.randperm(
            len(train_graphs), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        )
        model.train()
        train_loss, n_seen = torch.zeros((), dtype=torch.float64, device=device), 0
        for chunk in _batches(train_graphs, cfg.batch_size, order.tolist()):
            batch = collate_graphs(chunk, dtype=dtype, device=device)
            if cuda_graphs and len(chunk) == cfg.batch_size:
                if stepper is None or active_kind(cfg.loss, stepper.epoch) != phase:
                    from .graph_step import CapturedStep

                    del stepper
                    stepper = CapturedStep(model, optimizer, ema, cfg.loss, epoch, cfg.grad_clip, batch)
                stepper.load(batch)
                loss = stepper.replay()
            else:  # eager (and the short last batch of a captured run)
                sampled = getattr(optimizer, "sampled_params", None)
                with sampled(train=True) if sampled is not None else nullcontext():
                    optimizer.zero_grad(set_to_none=not cuda_graphs)
                    out = model(batch, compute_stress=_wants_stress(batch, cfg.loss))
                    loss, _ = compute_loss(out, batch, cfg.loss, epoch, floats=False)
                    loss.backward()
                    loss = loss.detach()  # drop the autograd graph before a capture may follow
                    del out
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                if cfg.ema_decay > 0:
                    ema.update(model)
            train_loss += loss.double() * len(chunk)  # detached in both branches
            n_seen += len(chunk)
            if bar is not None and not cuda_graphs:
                bar.set_postfix(loss=f"{float(loss.detach()):.4g}", refresh=False)
        train_loss = float(train_loss)
        with ema.applied(model):
            metrics = evaluate(
                model, valid_atoms, cfg.valid_batch_size, valid_graphs, loss_config=cfg.loss, epoch=epoch
            )
        valid_loss = metrics.pop("loss")
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(valid_loss)
        elif cfg.scheduler == "cosine":
            for group in optimizer.param_groups:  # "initial_lr" travels in the optimizer state on resume
                base_lr = float(group.setdefault("initial_lr", float(group["lr"])))
                set_group_lr(group, _cosine_lr(base_lr, cfg, epoch + 1, time.perf_counter() - t_start))
        record = {
            "epoch": epoch,
            "phase": phase,
            "train_loss": train_loss / max(n_seen, 1),
            "valid_loss": valid_loss,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "elapsed_s": time.perf_counter() - t_start,  # wall time since the run began (resumes included)
            **{k: v for k, v in metrics.items() if k != "n_structures"},
        }
        state["history"].append(record)
        improved = valid_loss < state["best"]
        if improved:
            state.update(best=valid_loss, best_epoch=epoch, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        stop_requested = bool(on_epoch_end(epoch, model)) if on_epoch_end is not None else False
        state["elapsed"] = time.perf_counter() - t_start
        stop = (
            stop_requested
            or state["epoch"] >= cfg.epochs
            or state["bad_epochs"] >= cfg.early_stopping_patience
            or (cfg.max_minutes > 0 and state["elapsed"] > 60.0 * cfg.max_minutes)
        )
        meta = {"history_tail": record, "train_config": cfg.to_dict()}
        if seen_dft:
            meta[checkpoint.DFT_HOSTS] = seen_dft
        train_state = {
            "settings": settings,
            "raw_state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": portable_optimizer_state(_to_cpu(optimizer.state_dict())),
            "scheduler": _to_cpu(scheduler.state_dict()) if scheduler is not None else {},
            "ema": {k: v.detach().cpu().clone() for k, v in ema.shadow.items()},
            "state": json.dumps(state),
        }
        with ema.applied(model):
            if improved or not best_path.exists():
                checkpoint.save(
                    best_path, model, model_config, extra={"best_epoch": epoch, **meta}, method=method
                )
            checkpoint.save(
                last_path, model, model_config, extra={"train_state": train_state, **meta}, method=method
            )
        atomic_write_text(out_dir / "history.json", json.dumps(state["history"], indent=1) + "\n")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(
                train=f"{record['train_loss']:.4g}",
                valid=f"{valid_loss:.4g}",
                E_mae=f"{1e3 * metrics['energy_mae']:.3g}meV",
                F_mae=f"{1e3 * metrics['forces_mae']:.3g}meV/Å",
                refresh=True,
            )
    if bar is not None:
        bar.close()
    return best_path
