"""Batched FIRE relaxations: many structures in one padding-free batch, with a refilling queue.

All structures in flight share one concatenated batch (:mod:`potentials.keys` layout: atoms
concatenated, one per-atom ``batch`` index). Each structure keeps its own FIRE state (dt, alpha,
velocities, count of downhill steps, step count) and its own convergence test; a structure that
finishes (converged, step limit, exploded, oscillating, non-finite) leaves the batch at once and a
queued structure joins, so the device stays full. Cell fixed; ``FixAtoms`` constraints respected.

For one structure the trajectory is ASE's ``FIRE`` step for step (same parameters, same
convergence test ``max_i |F_i| < fmax``, same step count semantics as ``Optimizer.run(steps=...)``).

Neighbour lists: built per structure at ``cutoff + skin`` (``potentials.data.collate``), rebuilt only
for a structure whose atoms moved more than ``skin / 2`` since its last build (Verlet list); edges
longer than ``cutoff`` are masked out every step, so the model sees exactly the edges a fresh list
would give. Units: Å, eV, eV/Å.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from potentials import keys as K
from potentials.model import resolve_device
from structures.common import InputError

ForceFn = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
CollateFn = Callable[..., dict[str, torch.Tensor]]

STATUSES = ("converged", "max_steps", "nonfinite", "exploded", "oscillating")


@dataclass(frozen=True)
class FireConfig:
    """FIRE parameters, defaults identical to ``ase.optimize.FIRE`` (time in ASE units, Å)."""

    dt: float = 0.1
    maxstep: float = 0.2  # Å, largest step of one structure (norm over all its atoms)
    dtmax: float = 1.0
    nmin: int = 5
    finc: float = 1.1
    fdec: float = 0.5
    astart: float = 0.1
    fa: float = 0.99


#: structures in flight by device type: a GPU step is bound by kernel launches, so a batch of 512 does 4.4x
#: the work per second of a batch of 32 (BENCHMARKS.md screen_cuda: 4,721 against 1,079 structure-steps/s)
DEFAULT_BATCH_SIZE = {"cpu": 32, "cuda": 512}


def default_batch_size(device: torch.device | str) -> int:
    """``screen run``'s batch size when none is given: 512 on a CUDA device, else 32."""
    return DEFAULT_BATCH_SIZE.get(torch.device(device).type, DEFAULT_BATCH_SIZE["cpu"])


@dataclass(frozen=True)
class RelaxConfig:
    """Relaxation settings; every field that changes results enters the store's settings hash."""

    fmax: float = 0.05  # eV/Å, converged when max_i |F_i| < fmax
    max_steps: int = 300  # FIRE steps per structure
    batch_size: int = 32  # structures in flight
    skin: float = 0.5  # Å, Verlet skin of the neighbour list (does not change results)
    fire: FireConfig = field(default_factory=FireConfig)
    explode_fmax: float = 100.0  # eV/Å, stop as "exploded" when max |F| exceeds this
    max_displacement: float = 6.0  # Å, stop as "exploded" when an atom moved farther from its start
    patience: int = 150  # steps without a new lowest energy (by energy_tol) -> "oscillating"
    energy_tol: float = 1e-6  # eV

    def result_fields(self) -> dict:
        """Fields that change relaxation results (for hashing; batch size and skin do not)."""
        return {
            "fmax": self.fmax,
            "max_steps": self.max_steps,
            "fire": self.fire.__dict__,
            "explode_fmax": self.explode_fmax,
            "max_displacement": self.max_displacement,
            "patience": self.patience,
            "energy_tol": self.energy_tol,
        }


PRESETS: dict[str, RelaxConfig] = {
    "default": RelaxConfig(),
    "quick": RelaxConfig(fmax=0.1, max_steps=150),
    "tight": RelaxConfig(fmax=0.02, max_steps=1000, patience=300),
}


@dataclass
class RelaxResult:
    """One finished relaxation; ``atoms`` has the input info, relaxed positions and a SinglePoint result."""

    index: int  # position in the input iterable
    atoms: Atoms  # relaxed structure
    energy: float  # eV, at the final positions
    fmax: float  # eV/Å, max |F| at the final positions
    n_steps: int  # FIRE steps taken
    status: str  # one of STATUSES
    max_displacement: float  # Å, largest displacement of an atom from its start

    @property
    def converged(self) -> bool:
        return self.status == "converged"


@dataclass
class RelaxProgress:
    """Passed to ``callback`` after every batched force evaluation."""

    step: int  # batched iterations so far
    n_active: int  # structures in the batch at this evaluation
    n_finished: int  # structures finished so far
    n_evaluations: int  # structure-force evaluations so far (sum of batch sizes)


def default_collate() -> CollateFn:
    """``potentials.data.collate`` when available, else the vesin reference in screening.testing."""
    try:
        from potentials.data import collate

        return collate
    except ImportError:  # pragma: no cover - a build without potentials.data
        from .testing import reference_collate

        return reference_collate


def free_mask(atoms: Atoms) -> np.ndarray:
    """(N,) bool, False for atoms fixed by FixAtoms; other constraints are refused."""
    free = np.ones(len(atoms), dtype=bool)
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            free[c.get_indices()] = False
        else:
            raise InputError(
                f"structure '{atoms.info.get('name', '?')}': constraint {type(c).__name__} is not supported; allowed: FixAtoms"
            )
    return free


def _seg_sum(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, index, x)


def _seg_max(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.zeros(n, dtype=x.dtype, device=x.device)
    return out.scatter_reduce_(0, index, x, reduce="amax", include_self=True)


class _Flight:
    """Concatenated state of the structures in flight (atom-level and graph-level tensors)."""

    def __init__(
        self, elements: Sequence[str], cutoff: float, skin: float, collate: CollateFn, device, dtype
    ):
        self.elements, self.cutoff, self.skin = tuple(elements), float(cutoff), float(skin)
        self.collate, self.device, self.dtype = collate, device, dtype
        f64 = dict(dtype=torch.float64, device=device)
        i64 = dict(dtype=torch.long, device=device)
        self.pos = torch.zeros(0, 3, **f64)
        self.vel = torch.zeros(0, 3, **f64)
        self.start = torch.zeros(0, 3, **f64)
        self.ref = torch.zeros(0, 3, **f64)
        self.free = torch.zeros(0, 1, **f64)
        self.z = torch.zeros(0, **i64)
        self.species = torch.zeros(0, **i64)
        self.batch = torch.zeros(0, **i64)
        self.num_atoms = torch.zeros(0, **i64)
        self.cell = torch.zeros(0, 3, 3, **f64)
        self.pbc = torch.zeros(0, 3, dtype=torch.bool, device=device)
        self.edge_index = torch.zeros(2, 0, **i64)
        self.edge_shift = torch.zeros(0, 3, **f64)
        self.dt = torch.zeros(0, **f64)
        self.alpha = torch.zeros(0, **f64)
        self.npos = torch.zeros(0, **i64)
        self.nsteps = torch.zeros(0, **i64)
        self.e_best = torch.zeros(0, **f64)
        self.since_best = torch.zeros(0, **i64)
        self.members: list[tuple[int, Atoms]] = []  # (input index, input atoms) per graph
        self._shift_vec: torch.Tensor | None = None

    @property
    def n_graphs(self) -> int:
        return len(self.members)

    def starts(self) -> torch.Tensor:
        return torch.cumsum(self.num_atoms, 0) - self.num_atoms

    def _graphs(self, atoms_list: list[Atoms], positions: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Collate at cutoff + skin; edge shifts re-expressed for ``positions`` if collate wrapped atoms."""
        work = []
        for atoms, p in zip(atoms_list, positions):
            a = Atoms(atoms.numbers, positions=p, cell=atoms.cell, pbc=atoms.pbc)
            work.append(a)
        b = self.collate(work, self.elements, self.cutoff + self.skin, dtype=torch.float64)
        mine = torch.as_tensor(np.concatenate(positions), dtype=torch.float64)
        theirs = b[K.POSITIONS].detach().to(torch.float64).cpu()
        shift = b[K.EDGE_CELL_SHIFT].to(torch.float64).cpu()
        if (theirs - mine).abs().max().item() > 1e-4:  # collate wrapped positions: pc = p + n @ cell
            cell = b[K.CELL].to(torch.float64).cpu()[b[K.BATCH].cpu()]
            n = torch.linalg.solve(cell.transpose(1, 2), (theirs - mine).unsqueeze(-1)).squeeze(-1).round()
            src, dst = b[K.EDGE_INDEX].cpu()
            shift = shift + n[src] - n[dst]
        b[K.EDGE_CELL_SHIFT] = shift
        return b

    def append(self, items: list[tuple[int, Atoms]], fire: FireConfig) -> None:
        if not items:
            return
        known = set(self.elements)
        for _, atoms in items:
            bad = sorted(set(atoms.get_chemical_symbols()) - known)
            if bad:
                raise InputError(
                    f"structure '{atoms.info.get('name', '?')}' has element(s) {', '.join(bad)} that the model does not cover; "
                    f"model elements: {', '.join(self.elements)}"
                )
        pos_list = [np.asarray(a.get_positions(), dtype=float) for _, a in items]
        b = self._graphs([a for _, a in items], pos_list)
        dev, f64 = self.device, torch.float64
        n0, g0 = self.pos.shape[0], self.n_graphs
        pos = torch.as_tensor(np.concatenate(pos_list), dtype=f64, device=dev)
        free = np.concatenate([free_mask(a) for _, a in items]).astype(float)[:, None]
        g_new = len(items)
        self.pos = torch.cat([self.pos, pos])
        self.vel = torch.cat([self.vel, torch.zeros_like(pos)])
        self.start = torch.cat([self.start, pos])
        self.ref = torch.cat([self.ref, pos])
        self.free = torch.cat([self.free, torch.as_tensor(free, dtype=f64, device=dev)])
        self.z = torch.cat([self.z, b[K.ATOMIC_NUMBERS].to(dev)])
        self.species = torch.cat([self.species, b[K.SPECIES].to(dev)])
        self.batch = torch.cat([self.batch, b[K.BATCH].to(dev) + g0])
        self.num_atoms = torch.cat([self.num_atoms, b[K.NUM_ATOMS].to(dev)])
        self.cell = torch.cat([self.cell, b[K.CELL].to(dev, f64)])
        self.pbc = torch.cat([self.pbc, b[K.PBC].to(dev)])
        self.edge_index = torch.cat([self.edge_index, b[K.EDGE_INDEX].to(dev) + n0], dim=1)
        self.edge_shift = torch.cat([self.edge_shift, b[K.EDGE_CELL_SHIFT].to(dev, f64)])
        self._shift_vec = None
        self.dt = torch.cat([self.dt, torch.full((g_new,), fire.dt, dtype=f64, device=dev)])
        self.alpha = torch.cat([self.alpha, torch.full((g_new,), fire.astart, dtype=f64, device=dev)])
        zeros = torch.zeros(g_new, dtype=torch.long, device=dev)
        self.npos = torch.cat([self.npos, zeros])
        self.nsteps = torch.cat([self.nsteps, zeros])
        self.e_best = torch.cat([self.e_best, torch.full((g_new,), float("inf"), dtype=f64, device=dev)])
        self.since_best = torch.cat([self.since_best, zeros])
        self.members.extend(items)

    def keep(self, keep_g: torch.Tensor) -> None:
        """Drop the graphs where ``keep_g`` (G,) is False, renumbering atoms, edges and graphs."""
        keep_a = keep_g[self.batch]
        new_atom = torch.cumsum(keep_a.long(), 0) - 1
        new_graph = torch.cumsum(keep_g.long(), 0) - 1
        keep_e = keep_a[self.edge_index[1]]
        self.edge_index = new_atom[self.edge_index[:, keep_e]]
        self.edge_shift = self.edge_shift[keep_e]
        self._shift_vec = None
        for name in ("pos", "vel", "start", "ref", "free", "z", "species"):
            setattr(self, name, getattr(self, name)[keep_a])
        self.batch = new_graph[self.batch[keep_a]]
        for name in ("num_atoms", "cell", "pbc", "dt", "alpha", "npos", "nsteps", "e_best", "since_best"):
            setattr(self, name, getattr(self, name)[keep_g])
        idx = keep_g.nonzero().flatten().tolist()
        self.members = [self.members[i] for i in idx]

    def rebuild(self, which_g: torch.Tensor) -> None:
        """Rebuild the neighbour lists of the graphs where ``which_g`` (G,) is True (current positions)."""
        sel = which_g.nonzero().flatten()
        if sel.numel() == 0:
            return
        keep_e = ~which_g[self.batch[self.edge_index[1]]]
        starts = self.starts()
        pos_cpu = self.pos.detach().cpu().numpy()
        st, na = starts.cpu().numpy(), self.num_atoms.cpu().numpy()
        gl = sel.cpu().tolist()
        b = self._graphs([self.members[g][1] for g in gl], [pos_cpu[st[g] : st[g] + na[g]] for g in gl])
        sub_batch = b[K.BATCH].to(self.device)
        sub_ptr = torch.cumsum(b[K.NUM_ATOMS].to(self.device), 0) - b[K.NUM_ATOMS].to(self.device)
        local = torch.arange(sub_batch.numel(), device=self.device) - sub_ptr[sub_batch]
        to_global = starts[sel][sub_batch] + local
        new_edges = to_global[b[K.EDGE_INDEX].to(self.device)]
        self.edge_index = torch.cat([self.edge_index[:, keep_e], new_edges], dim=1)
        self.edge_shift = torch.cat(
            [self.edge_shift[keep_e], b[K.EDGE_CELL_SHIFT].to(self.device, torch.float64)]
        )
        self._shift_vec = None
        atoms_sel = which_g[self.batch]
        self.ref = torch.where(atoms_sel[:, None], self.pos, self.ref)

    def _shift_vectors(self) -> torch.Tensor:
        """(E, 3) Å, S @ cell of every edge (the cell is fixed, so computed once per list change)."""
        if self._shift_vec is None or self._shift_vec.shape[0] != self.edge_shift.shape[0]:
            cell_e = self.cell[self.batch[self.edge_index[1]]]
            self._shift_vec = torch.einsum("ei,eij->ej", self.edge_shift, cell_e)
        return self._shift_vec

    def model_batch(self) -> dict[str, torch.Tensor]:
        """The model input at the current positions with edges r < cutoff only."""
        src, dst = self.edge_index
        vec = self.pos[src] - self.pos[dst] + self._shift_vectors()
        m = (vec * vec).sum(1) < self.cutoff**2
        return {
            K.POSITIONS: self.pos.to(self.dtype),
            K.ATOMIC_NUMBERS: self.z,
            K.SPECIES: self.species,
            K.BATCH: self.batch,
            K.NUM_ATOMS: self.num_atoms,
            K.CELL: self.cell.to(self.dtype),
            K.PBC: self.pbc,
            K.EDGE_INDEX: self.edge_index[:, m],
            K.EDGE_CELL_SHIFT: self.edge_shift[m].to(self.dtype),
        }


def _fire_step(fl: _Flight, f: torch.Tensor, fire: FireConfig) -> None:
    """One FIRE update of every graph in flight (ASE's FIRE.step, vectorised per graph)."""
    g, b = fl.n_graphs, fl.batch
    v = fl.vel
    first = fl.nsteps == 0
    vf = _seg_sum((f * v).sum(1), b, g)
    ff = _seg_sum((f * f).sum(1), b, g)
    vv = _seg_sum((v * v).sum(1), b, g)
    up = (vf > 0.0) & ~first
    down = ~up & ~first
    coef = torch.where(up, fl.alpha * vv.sqrt() / ff.clamp_min(1e-300).sqrt(), torch.zeros_like(vv))
    mix = torch.where(up, 1.0 - fl.alpha, torch.where(down, torch.zeros_like(vv), torch.ones_like(vv)))
    v = mix[b, None] * v + coef[b, None] * f
    grow = up & (fl.npos > fire.nmin)
    fl.dt = torch.where(grow, torch.clamp(fl.dt * fire.finc, max=fire.dtmax), fl.dt)
    fl.alpha = torch.where(grow, fl.alpha * fire.fa, fl.alpha)
    fl.npos = torch.where(up, fl.npos + 1, fl.npos)
    fl.alpha = torch.where(down, torch.full_like(fl.alpha, fire.astart), fl.alpha)
    fl.dt = torch.where(down, fl.dt * fire.fdec, fl.dt)
    fl.npos = torch.where(down, torch.zeros_like(fl.npos), fl.npos)
    v = v + fl.dt[b, None] * f
    dr = fl.dt[b, None] * v
    norm = _seg_sum((dr * dr).sum(1), b, g).sqrt()
    scale = torch.where(norm > fire.maxstep, fire.maxstep / norm.clamp_min(1e-300), torch.ones_like(norm))
    fl.pos = fl.pos + dr * scale[b, None]
    fl.vel = v
    fl.nsteps = fl.nsteps + 1


def _resolve_model(force_fn: ForceFn, elements, cutoff, dtype):
    owner = getattr(force_fn, "__self__", None)
    elements = elements if elements is not None else getattr(owner, "elements", None)
    cutoff = cutoff if cutoff is not None else getattr(owner, "cutoff", None)
    if elements is None or cutoff is None:
        raise TypeError("relax_many needs elements and cutoff (pass them, or pass posterior.mean_forward)")
    if dtype is None:
        dtype = getattr(owner, "dtype", None)
        if not isinstance(dtype, torch.dtype):
            params = getattr(owner, "parameters", None)
            first = next(iter(params()), None) if callable(params) else None
            dtype = first.dtype if first is not None else torch.get_default_dtype()
    return tuple(elements), float(cutoff), dtype


def relax_many(
    structures: Iterable[Atoms],
    force_fn: ForceFn,
    batch_size: int | None = None,
    fmax: float | None = None,
    max_steps: int | None = None,
    callback: Callable[[RelaxProgress], None] | None = None,
    *,
    config: RelaxConfig | None = None,
    elements: Sequence[str] | None = None,
    cutoff: float | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    collate_fn: CollateFn | None = None,
) -> Iterator[RelaxResult]:
    """Relax ``structures`` with batched FIRE; yield each :class:`RelaxResult` as soon as it finishes.

    ``force_fn(batch) -> {"energy": (G,), "forces": (N, 3)}`` is typically ``posterior.mean_forward``
    (then ``elements``/``cutoff``/``dtype`` are read from the posterior). At most ``batch_size``
    structures are in flight; results come in completion order (``RelaxResult.index`` gives the input order).
    """
    cfg = config or RelaxConfig()
    cfg = replace(
        cfg,
        batch_size=int(batch_size if batch_size is not None else cfg.batch_size),
        fmax=float(fmax if fmax is not None else cfg.fmax),
        max_steps=int(max_steps if max_steps is not None else cfg.max_steps),
    )
    if cfg.batch_size < 1 or cfg.max_steps < 0 or cfg.fmax <= 0:
        raise InputError(
            f"bad relax settings batch_size={cfg.batch_size}, max_steps={cfg.max_steps}, fmax={cfg.fmax}; need >= 1, >= 0, > 0"
        )
    elements, cutoff, dtype = _resolve_model(force_fn, elements, cutoff, dtype)
    dev = resolve_device(device)
    fl = _Flight(elements, cutoff, cfg.skin, collate_fn or default_collate(), dev, dtype)
    queue = enumerate(structures)
    exhausted = False
    step = n_finished = n_evals = 0
    fire = cfg.fire

    def refill() -> None:
        nonlocal exhausted
        items = []
        while not exhausted and fl.n_graphs + len(items) < cfg.batch_size:
            try:
                items.append(next(queue))
            except StopIteration:
                exhausted = True
        fl.append(items, fire)

    refill()
    while fl.n_graphs:
        g, b = fl.n_graphs, fl.batch
        moved = _seg_max((fl.pos - fl.ref).norm(dim=1), b, g)
        fl.rebuild(moved > 0.5 * cfg.skin)
        out = force_fn(fl.model_batch())
        energy = out[K.ENERGY].detach().to(torch.float64).reshape(-1)
        forces = out[K.FORCES].detach().to(torch.float64) * fl.free
        step += 1
        n_evals += g
        fnorm = forces.norm(dim=1)
        finite = torch.isfinite(energy) & (_seg_sum((~torch.isfinite(fnorm)).double(), b, g) == 0)
        fmax_g = _seg_max(torch.nan_to_num(fnorm, nan=0.0, posinf=0.0), b, g)
        disp = _seg_max((fl.pos - fl.start).norm(dim=1), b, g)
        improved = energy < fl.e_best - cfg.energy_tol
        fl.e_best = torch.where(improved, energy, fl.e_best)
        fl.since_best = torch.where(improved, torch.zeros_like(fl.since_best), fl.since_best + 1)
        status = torch.full((g,), -1, dtype=torch.long, device=dev)  # index into STATUSES, -1 = continue
        conditions = [
            (~finite, 2),
            (fmax_g < cfg.fmax, 0),
            ((fmax_g > cfg.explode_fmax) | (disp > cfg.max_displacement), 3),
            (fl.since_best >= cfg.patience, 4),
            (fl.nsteps >= cfg.max_steps, 1),
        ]
        for cond, code in conditions:
            status = torch.where((status < 0) & cond, torch.full_like(status, code), status)
        done = status >= 0
        if callback is not None:
            callback(RelaxProgress(step=step, n_active=g, n_finished=n_finished, n_evaluations=n_evals))
        if bool(done.any()):
            results = _collect(fl, done, status, energy, forces, fmax_g, disp)
            n_finished += len(results)
            fl.keep(~done)
            forces = forces[~done[b]]
            yield from results
        if fl.n_graphs:
            _fire_step(fl, forces, fire)
        refill()


def _collect(fl: _Flight, done, status, energy, forces, fmax_g, disp) -> list[RelaxResult]:
    idx = done.nonzero().flatten().cpu().tolist()
    starts, na = fl.starts().cpu().numpy(), fl.num_atoms.cpu().numpy()
    pos, frc = fl.pos.detach().cpu().numpy(), forces.cpu().numpy()
    st, e, fm, dp, ns = (t.cpu().numpy() for t in (status, energy, fmax_g, disp, fl.nsteps))
    out = []
    for g in idx:
        index, atoms_in = fl.members[g]
        sl = slice(starts[g], starts[g] + na[g])
        atoms = atoms_in.copy()
        atoms.set_positions(pos[sl], apply_constraint=False)
        atoms.calc = SinglePointCalculator(atoms, energy=float(e[g]), forces=frc[sl].copy())
        out.append(
            RelaxResult(
                index=index,
                atoms=atoms,
                energy=float(e[g]),
                fmax=float(fm[g]),
                n_steps=int(ns[g]),
                status=STATUSES[int(st[g])],
                max_displacement=float(dp[g]),
            )
        )
    return out
