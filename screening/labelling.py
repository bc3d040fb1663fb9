"""Reference labelling: GPAW plane-wave DFT, SevenNet-0, EMT or any ASE calculator -> a resumable label store.

The store is an ASE SQLite database with one row per (structure, engine, settings). Each row carries a
unique ``label_key`` = hash(numbers, positions, cell, pbc) + engine + hash(physical settings), so re-running
the same command skips what is done. Rows hold energy (eV), forces (eV/Å), optional stress (eV/Å^3),
magnetic moments (μB), the full settings (JSON), the engine and its version, wall time (s), SCF iterations,
the convergence flag, every SCF attempt, and the structure-record keys of ``structures.keys``. A calculation
whose SCF never converged is kept as a row with ``converged=False`` and *no* energy; exports skip it.

Workers: one process per core; results are written by the parent only, one transaction per row.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from structures import keys as K
from structures.common import InputError, atomic_write_text

GPAW_INSTALL_HINT = (
    "GPAW is not installed: run `apt-get install libxc-dev libopenblas-dev` then `CC=g++ pip install gpaw` "
    "and `gpaw install-data` (or `pip install gpaw-data`)"
)
#: structure-record keys copied from ``atoms.info`` into each row's key-value pairs (None values are skipped)
RECORD_KEYS = (K.NAME, K.HOST, K.METAL, K.METAL2, K.MOTIF, K.N_N, K.N_SITES, K.SITE, K.SUPERCELL)
#: extra provenance keys written by ``screen data`` (frame kind, parent name ...), also copied when present
EXTRA_KEYS = (
    "frame",
    "parent",
    "rattle",
    "strain",
    "relax_step",
    "relax_of",
    "source",
    "source_file",
    "ionic_step",
    "bond_step",  # Å the metal pair was moved by a bond line (`screen validate --bond-line`)
)


# ----------------------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelSettings:
    """Reference-calculation settings. DFT fields are used by the ``gpaw`` engine; the others ignore them.

    ecut: plane-wave cutoff (eV). kdens: k-point density (points per Å^-1, ASE convention) used when
    ``kpts`` is None; axes with vacuum get 1 k-point. smearing: Fermi-Dirac width (eV). magmom_scales:
    initial-moment scale of each SCF attempt (1 = structures.metals.INITIAL_MAGMOM, 0 = non-magnetic start);
    mixers: density mixer of each attempt ("msr1": GPAW's default MSR1 mixer; "dif": total density and
    magnetisation mixed apart, the magnetisation more gently, for moments that slosh; "pulay": Pulay with
    mixer_nmaxold and mixer_weight); mixer_betas: mixing beta of each attempt. The mixer ladder changes how
    the SCF gets there, not the converged answer, so it is not part of the physics hash.
    scf_eigenstates: GPAW's eigenstate convergence criterion (eV² per valence electron); GPAW's own default,
    4e-8, kept the Au2@4Nf host iterating for 15+ more iterations after its energy and density had converged
    while a 0.1 μB moment drifted: it measures wavefunction changes, not the energy or forces labelled here
    (those follow the energy and density criteria, left at GPAW's defaults). Like the mixer ladder it is
    not part of the physics hash.
    maxiter: SCF iterations of one attempt before the next rung of the ladder; an SCF control, not physics.
    60 since session 15: the 71 converged pw500 slab labels took 9-42 iterations, while Mo2@2Nc+H@top_X2 ran 45
    over three runs with its moment swinging between 0.6 and 1.2 μB and its density error stuck near
    10^-3.5; at 120 such a case held a core for 5 hours before the second mixer was tried.
    calc_kwargs: JSON keyword arguments for ase:<mod>:<Class>.
    """

    xc: str = "PBE"
    ecut: float = 400.0
    kdens: float = 3.5
    kpts: tuple[int, int, int] | None = None
    smearing: float = 0.1
    spinpol: bool = True
    maxiter: int = 60
    scf_eigenstates: float = 1e-6
    mixer_beta: float = 0.05
    mixer_nmaxold: int = 5
    mixer_weight: float = 50.0
    magmom_scales: tuple[float, ...] = (1.0, 0.5, 0.0)
    mixers: tuple[str, ...] = ("msr1", "dif", "pulay")
    mixer_betas: tuple[float, ...] = (0.05, 0.03, 0.02)
    stress: bool = False
    model: str = "7net-0"
    calc_kwargs: str = "{}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kpts"] = list(self.kpts) if self.kpts is not None else None
        d["magmom_scales"] = list(self.magmom_scales)
        d["mixer_betas"] = list(self.mixer_betas)
        d["mixers"] = list(self.mixers)
        return d


#: named presets: "pw500" (PW 500 eV, 3x3x1 k on the 4x4 cell) is the default since the settings check
#: (BENCHMARKS.md dft, dft_kpoints: on Cu2@4Na+H, 400 -> 500 eV moved ΔE_H by -0.083 eV, 500 -> 600 eV by
#: +0.008, 3x3x1 -> 4x4x1 k by -0.023); "pw400" the sessions 1-3 campaign setting; "pw500k4" the k-point
#: check (500 eV, 4x4x1 k); "pw600" the cutoff check; "fast" a tiny setting for tests (gamma point, 250 eV)
PRESETS: dict[str, LabelSettings] = {
    "pw400": LabelSettings(),
    "pw500k4": LabelSettings(ecut=500.0, kdens=5.0),
    "pw500": LabelSettings(ecut=500.0),
    "pw600": LabelSettings(ecut=600.0),
    "fast": LabelSettings(ecut=250.0, kpts=(1, 1, 1), smearing=0.1),
}


DEFAULT_PRESET = "pw500"


def get_preset(name: str) -> LabelSettings:
    if name not in PRESETS:
        raise InputError(f"unknown settings preset '{name}'; allowed: {', '.join(PRESETS)}")
    return PRESETS[name]


def vacuum_axes(atoms, min_gap: float = 5.0) -> list[bool]:
    """Per cell axis: True when the atoms leave an empty gap >= ``min_gap`` Å along it (vacuum axis)."""
    out = []
    if len(atoms) == 0:
        return [True, True, True]
    frac = atoms.get_scaled_positions(wrap=True)
    lengths = atoms.cell.lengths()
    for i in range(3):
        if not atoms.pbc[i]:
            out.append(True)
            continue
        s = np.sort(frac[:, i])
        gaps = np.diff(np.concatenate([s, [s[0] + 1.0]]))
        out.append(bool(gaps.max() * lengths[i] >= min_gap))
    return out


def kpts_for(atoms, settings: LabelSettings) -> tuple[int, int, int]:
    """Monkhorst-Pack grid from ``settings.kpts`` or the k-point density, with 1 along vacuum axes."""
    if settings.kpts is not None:
        return tuple(int(k) for k in settings.kpts)  # type: ignore[return-value]
    from ase.calculators.calculator import kptdensity2monkhorstpack

    k = kptdensity2monkhorstpack(atoms, kptdensity=settings.kdens, even=False)
    vac = vacuum_axes(atoms)
    return tuple(1 if vac[i] else max(1, int(k[i])) for i in range(3))  # type: ignore[return-value]


def initial_magmoms(atoms, scale: float = 1.0) -> np.ndarray:
    """Initial moments (μB per atom): the structure's own if set, else INITIAL_MAGMOM of metals; × scale."""
    m = atoms.get_initial_magnetic_moments()
    if not np.any(m):
        from structures.metals import INITIAL_MAGMOM

        m = np.array([INITIAL_MAGMOM.get(s, 0.0) for s in atoms.get_chemical_symbols()], dtype=float)
    return np.asarray(m, dtype=float) * scale


# ----------------------------------------------------------------------------------------------------------
# engines
# ----------------------------------------------------------------------------------------------------------
class SCFNotConverged(RuntimeError):
    """Raised by a calculator wrapper when the self-consistent field did not converge."""


def _is_nonconvergence(exc: BaseException) -> bool:
    if isinstance(exc, SCFNotConverged):
        return True
    names = [c.__name__ for c in type(exc).__mro__]
    return any("Convergence" in n or n == "SCFError" for n in names)


@dataclass(frozen=True)
class Engine:
    """A reference labeller. ``make(atoms, settings, attempt, txt)``: an ASE calculator for one attempt.

    ``physics(settings)`` lists the settings that change the numbers (they enter the label key).
    """

    name: str
    make: Callable[..., Any]
    version: Callable[[], str]
    physics: Callable[[LabelSettings], dict[str, Any]]
    check: Callable[[Sequence[Any]], None] = lambda structures: None
    attempts: Callable[[LabelSettings], list[dict[str, Any]]] = lambda s: [{}]
    has_scf: bool = False
    # SCF checkpoints (GPAW): ``converge(atoms, calc, path, maxiter=, done=)`` runs the SCF and writes its state
    # to ``path`` every few iterations (``done``: iterations of the attempt before a restart, so ``maxiter``
    # caps the attempt in all); ``restart(path, txt)`` is a calculator that continues from such a file
    converge: Callable[..., None] | None = None
    restart: Callable[[Path, str | None], Any] | None = None


SCF_CHECKPOINT_EVERY = 5  # SCF iterations between two checkpoints of a long single point


def _gpaw_converge(
    atoms, calc, path: Path | None, every: int | None = None, *, maxiter: int | None = None, done: int = 0
) -> None:
    """Iterate GPAW's SCF; every ``every`` iterations write the state (density and wave functions) to
    ``path`` atomically, so a single point killed with its session continues where it stopped.

    ``done``: SCF iterations that earlier runs of this attempt spent before a restart from ``path``. A
    restarted calculator counts from 1 again with the ``maxiter`` stored in its checkpoint, so without this
    an SCF that never converges would get a fresh ``maxiter`` every session; here the attempt gets
    ``maxiter`` iterations in all (at least one more after a restart)."""
    every = SCF_CHECKPOINT_EVERY if every is None else every
    loop = getattr(getattr(calc, "_dft", None), "scf_loop", None)  # set on a calculator read from a file
    if maxiter is not None and loop is not None and hasattr(loop, "maxiter"):
        loop.maxiter = max(1, int(maxiter) - int(done))
    for i, _ in enumerate(calc.iconverge(atoms), 1):
        if path is not None and i % every == 0:
            tmp = path.with_name(path.name + ".tmp")
            calc.write(str(tmp), mode="all")
            os.replace(tmp, path)
            atomic_write_text(_scf_count_path(path), json.dumps({"scf": int(done) + i}))


def _scf_count_path(ckpt: Path) -> Path:
    """The SCF iterations that produced the checkpoint ``ckpt`` (JSON ``{"scf": n}``), beside it."""
    return ckpt.with_name(ckpt.name + ".json")


def _scf_before(ckpt: Path, txt: str) -> int:
    """SCF iterations an attempt spent before its restart from ``ckpt``: the count written with the
    checkpoint, or (checkpoints written before the count existed) the iterations in its interrupted logs."""
    try:
        return int(json.loads(_scf_count_path(ckpt).read_text())["scf"])
    except (OSError, ValueError, KeyError, TypeError):
        return _logged_scf_iterations(sorted(Path(txt).parent.glob(Path(txt).stem + ".part*.txt")))


_LOGGED_ITERATION = re.compile(r"^\|?iter:\s*\d+", re.MULTILINE)


def _logged_scf_iterations(logs: Sequence[Path]) -> int:
    """SCF iterations written to GPAW text logs (both log formats); a run killed after its last
    checkpoint repeats up to ``SCF_CHECKPOINT_EVERY - 1`` of them, which count again (compute spent)."""
    return sum(len(_LOGGED_ITERATION.findall(p.read_text(errors="replace"))) for p in logs if p.exists())


def _gpaw_restart(path: Path, txt: str | None):
    from gpaw import GPAW

    return GPAW(str(path), txt=txt)


def _gpaw_check(structures: Sequence[Any]) -> None:
    try:
        import gpaw  # noqa: F401
    except ImportError as exc:
        raise InputError(GPAW_INSTALL_HINT) from exc


def _gpaw_version() -> str:
    import gpaw

    return f"gpaw {gpaw.__version__}"


def _gpaw_physics(s: LabelSettings) -> dict[str, Any]:
    return {
        "xc": s.xc,
        "mode": "pw",
        "ecut": s.ecut,
        "kpts": list(s.kpts) if s.kpts else None,
        "kdens": None if s.kpts else s.kdens,
        "smearing": s.smearing,
        "spinpol": s.spinpol,
    }


def _gpaw_attempts(s: LabelSettings) -> list[dict[str, Any]]:
    """The SCF ladder: attempt i uses magmom_scales[i], mixers[i] and mixer_betas[i] (the last entry
    repeats). Measured on Fe2@6Na+H (4x4 cell, PW 400 eV): Pulay at beta 0.05 left the moment sloshing
    near 1.9 μB and the density stuck at 6e-4 e/electron after 120 iterations, hence MSR1 first and a
    magnetisation-damped mixer second."""
    n = max(len(s.magmom_scales), len(s.mixers), 1)

    def pick(seq: tuple, i: int, default: Any) -> Any:
        return seq[min(i, len(seq) - 1)] if seq else default

    out = []
    for i in range(n if s.spinpol else min(2, n)):
        out.append(
            {
                "magmom_scale": float(pick(s.magmom_scales, i, 1.0)) if s.spinpol else 0.0,
                "mixer": str(pick(s.mixers, i, "pulay")),
                "beta": float(pick(s.mixer_betas, i, s.mixer_beta)),
            }
        )
    return out


def gpaw_mixer(attempt: dict[str, Any], s: LabelSettings) -> dict[str, Any]:
    """GPAW ``mixer`` keyword of one SCF attempt (see ``_gpaw_attempts``)."""
    beta = float(attempt.get("beta", s.mixer_beta))
    kind = attempt.get("mixer", "pulay")
    if kind == "msr1":
        return {"name": "msr1", "beta": beta}
    if kind == "dif":
        return {
            "name": "multi",
            "method": "dif",
            "mixer_a": {"name": "msr1", "beta": beta},
            "mixer_b": {"name": "msr1", "beta": beta / 2, "nmaxold": 5},
        }
    if kind == "pulay":
        return {"name": "pulay", "beta": beta, "nmaxold": s.mixer_nmaxold, "weight": s.mixer_weight}
    raise InputError(f"unknown SCF mixer '{kind}'; allowed: msr1, dif, pulay")


def _gpaw_make(atoms, s: LabelSettings, attempt: dict[str, Any], txt: str | None):
    from gpaw import GPAW

    if s.spinpol:
        atoms.set_initial_magnetic_moments(initial_magmoms(atoms, attempt.get("magmom_scale", 1.0)))
    else:
        atoms.set_initial_magnetic_moments(None)
    return GPAW(
        mode={"name": "pw", "ecut": s.ecut},
        xc=s.xc,
        kpts={"size": kpts_for(atoms, s), "gamma": True},
        occupations={"name": "fermi-dirac", "width": s.smearing},
        spinpol=s.spinpol,
        mixer=gpaw_mixer(attempt, s),
        maxiter=s.maxiter,
        convergence={"eigenstates": s.scf_eigenstates},
        txt=txt,
    )


def _emt_check(structures: Sequence[Any]) -> None:
    from ase.calculators.emt import parameters

    for atoms in structures:
        bad = sorted(set(atoms.get_chemical_symbols()) - set(parameters))
        if bad:
            allowed = ", ".join(sorted(parameters))
            raise InputError(f"EMT has no parameters for {','.join(bad)}; allowed elements: {allowed}")


def _emt_make(atoms, s: LabelSettings, attempt: dict[str, Any], txt: str | None):
    from ase.calculators.emt import EMT

    return EMT()


def _ase_version_of(module: str) -> str:
    top = importlib.import_module(module.split(".")[0])
    return f"{module.split('.')[0]} {getattr(top, '__version__', '?')}"


def _sevenn_check(structures: Sequence[Any]) -> None:
    try:
        import sevenn  # noqa: F401
    except ImportError as exc:
        raise InputError(
            "SevenNet is not installed: run `pip install sevenn` (or `pip install dacscreen[reference]`)"
        ) from exc


_SEVENN_CACHE: dict[str, Any] = {}


def _sevenn_make(atoms, s: LabelSettings, attempt: dict[str, Any], txt: str | None):
    if s.model not in _SEVENN_CACHE:
        from sevenn.calculator import SevenNetCalculator

        _SEVENN_CACHE[s.model] = SevenNetCalculator(s.model, device="cpu")
    return _SEVENN_CACHE[s.model]


def _ase_engine(spec: str) -> Engine:
    parts = spec.split(":")
    if len(parts) != 3 or not all(parts[1:]):
        raise InputError(
            f"bad engine '{spec}'; allowed: ase:<module>:<Class>, e.g. ase:ase.calculators.vasp:Vasp"
        )
    _, module, cls_name = parts

    def load():
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise InputError(f"engine '{spec}': cannot import module '{module}' ({exc})") from exc
        if not hasattr(mod, cls_name):
            raise InputError(f"engine '{spec}': module '{module}' has no class '{cls_name}'")
        return getattr(mod, cls_name)

    def make(atoms, s: LabelSettings, attempt: dict[str, Any], txt: str | None):
        return load()(**_calc_kwargs(s))

    return Engine(
        name=spec,
        make=make,
        version=lambda: _ase_version_of(module),
        physics=lambda s: {"calc_kwargs": _calc_kwargs(s)},
        check=lambda structures: load() and None,
    )


def _calc_kwargs(s: LabelSettings) -> dict[str, Any]:
    try:
        kw = json.loads(s.calc_kwargs)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"bad --calc-kwargs {s.calc_kwargs!r}: not JSON ({exc.msg}); allowed: a JSON object"
        ) from exc
    if not isinstance(kw, dict):
        raise InputError(f"bad --calc-kwargs {s.calc_kwargs!r}; allowed: a JSON object")
    return kw


ENGINES: dict[str, Engine] = {
    "gpaw": Engine(
        "gpaw",
        _gpaw_make,
        _gpaw_version,
        _gpaw_physics,
        _gpaw_check,
        _gpaw_attempts,
        has_scf=True,
        converge=_gpaw_converge,
        restart=_gpaw_restart,
    ),
    "sevenn": Engine(
        "sevenn", _sevenn_make, lambda: _ase_version_of("sevenn"), lambda s: {"model": s.model}, _sevenn_check
    ),
    "emt": Engine("emt", _emt_make, lambda: _ase_version_of("ase"), lambda s: {}, _emt_check),
}


_BUILTIN = tuple(ENGINES)


def register_engine(engine: Engine) -> None:
    """Add an engine (plugins, test stand-ins). Worker processes see only engines registered on import."""
    ENGINES[engine.name] = engine


def get_engine(name: str) -> Engine:
    """``gpaw`` | ``sevenn`` | ``emt`` | ``ase:<module>:<Class>`` (any registered name) -> Engine."""
    if name.startswith("ase:"):
        return _ase_engine(name)
    if name not in ENGINES:
        raise InputError(f"unknown engine '{name}'; allowed: {', '.join(ENGINES)} or ase:<module>:<Class>")
    return ENGINES[name]


# ----------------------------------------------------------------------------------------------------------
# keys
# ----------------------------------------------------------------------------------------------------------
from structures.common import structure_hash  # noqa: E402  (re-exported; one definition)


def settings_hash(engine: Engine, settings: LabelSettings) -> str:
    """Hash of the engine name and its physical settings (not SCF controls): 12 hex characters."""
    payload = json.dumps({"engine": engine.name, **engine.physics(settings)}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def label_key(atoms, engine: Engine, settings: LabelSettings) -> str:
    return f"{structure_hash(atoms)}-{settings_hash(engine, settings)}"


# ----------------------------------------------------------------------------------------------------------
# one label
# ----------------------------------------------------------------------------------------------------------
def _scf_iterations(calc) -> int | None:
    for attr in ("get_number_of_iterations",):
        fn = getattr(calc, attr, None)
        if fn is not None:
            try:
                n = fn()
                return int(n) if n is not None else None
            except Exception:  # noqa: BLE001 - optional information
                return None
    return None


def _magnetic(calc, atoms, allow_calculation: bool) -> dict[str, Any]:
    """Total (μB) and per-atom moments when the calculation produced them; no new force-field call."""
    out: dict[str, Any] = {}
    for name in ("magmom", "magmoms"):
        v = None
        try:
            v = calc.get_property(name, atoms, allow_calculation=False)
            if v is None and allow_calculation:
                v = calc.get_property(name, atoms)
        except Exception:  # noqa: BLE001 - not every engine is spin-polarised
            v = None
        if v is not None:
            out[name] = float(v) if name == "magmom" else np.asarray(v, dtype=float)
    return out if len(out) == 2 else {}


def compute_label(
    atoms, engine: str | Engine, settings: LabelSettings, log_dir: str | None = None, key: str | None = None
) -> dict[str, Any]:
    """Run every SCF attempt of ``engine`` until one converges. Returns a plain dict (picklable).

    Keys: converged, status ("ok" | "unconverged" | "error"), energy, forces, stress, magmom, magmoms,
    n_scf, attempts (list of dicts: attempt settings, converged, n_scf, wall_s, error), wall_s, error, kpts.

    Engines with SCF checkpoints (GPAW) write ``<log_dir>/<key>.a<i>.gpw`` every few iterations; a run
    killed mid-SCF continues from it next time (the attempt records ``restarted``; its ``n_scf`` and
    ``wall_s`` then count the last run only, the earlier logs stay as ``.part<n>.txt``).
    """
    engine = get_engine(engine) if isinstance(engine, str) else engine
    t0 = time.perf_counter()
    attempts: list[dict[str, Any]] = []
    out: dict[str, Any] = {"converged": False, "status": "unconverged", "error": ""}
    if engine.has_scf:
        out["kpts"] = list(kpts_for(atoms, settings))
    for i, attempt in enumerate(engine.attempts(settings)):
        work = atoms.copy()
        txt = ckpt = None
        if log_dir is not None and engine.has_scf:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            txt = str(Path(log_dir) / f"{key or structure_hash(atoms)}.a{i}.txt")
            if engine.converge is not None:
                ckpt = Path(txt).with_suffix(".gpw")  # git-ignored (*.gpw)
        ta = time.perf_counter()
        rec: dict[str, Any] = {**attempt, "converged": False}
        try:
            calc = None
            if ckpt is not None and ckpt.exists() and engine.restart is not None:
                n = 1 + len(list(Path(txt).parent.glob(Path(txt).stem + ".part*.txt")))
                if Path(txt).exists():  # keep the log of the interrupted run
                    os.replace(txt, Path(txt).with_suffix(f".part{n}.txt"))
                try:
                    calc = engine.restart(ckpt, txt)
                    work = calc.get_atoms()
                    rec["restarted"] = n
                    rec["scf_before"] = _scf_before(ckpt, txt)
                except Exception as exc:  # noqa: BLE001 - a damaged checkpoint: start afresh
                    rec["restart_error"] = f"{type(exc).__name__}: {exc}"[:300]
                    calc, work = None, atoms.copy()
            if calc is None:
                calc = engine.make(work, settings, attempt, txt)
            work.calc = calc
            if engine.converge is not None:
                engine.converge(work, calc, ckpt, maxiter=settings.maxiter, done=rec.get("scf_before", 0))
            energy = float(work.get_potential_energy())
            forces = np.asarray(work.get_forces(), dtype=float)
            conv_flag = getattr(calc, "converged", True)
            if conv_flag is False:
                raise SCFNotConverged("calculator reports converged=False")
            rec["converged"] = True
            rec["n_scf"] = _scf_iterations(calc)
            out.update(
                converged=True, status="ok", energy=energy, forces=forces, n_scf=rec["n_scf"], error=""
            )
            if settings.stress and all(work.pbc):
                try:
                    out["stress"] = np.asarray(work.get_stress(voigt=False), dtype=float)
                except Exception as exc:  # noqa: BLE001 - stress is optional
                    rec["stress_error"] = f"{type(exc).__name__}: {exc}"
            out.update(_magnetic(calc, work, allow_calculation=engine.has_scf))
        except (KeyboardInterrupt, InputError):
            raise
        except Exception as exc:  # noqa: BLE001 - recorded in the row, never silent
            rec["error"] = f"{type(exc).__name__}: {exc}"[:500]
            rec["n_scf"] = (
                _scf_iterations(getattr(work, "calc", None)) if getattr(work, "calc", None) else None
            )
            if not _is_nonconvergence(exc):
                out.update(status="error", error=rec["error"])
                rec["wall_s"] = time.perf_counter() - ta
                attempts.append(rec)
                break
            out.update(status="unconverged", error=rec["error"])
        rec["wall_s"] = time.perf_counter() - ta
        attempts.append(rec)
        if (
            ckpt is not None
        ):  # the attempt ended (an interrupt re-raises above and keeps them for the restart)
            ckpt.unlink(missing_ok=True)
            _scf_count_path(ckpt).unlink(missing_ok=True)
        if out["converged"]:
            break
    out["attempts"] = attempts
    out["wall_s"] = time.perf_counter() - t0
    return out


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _worker(payload: tuple[Any, str, LabelSettings, str | None, str]) -> tuple[str, dict[str, Any]]:
    atoms, engine_name, settings, log_dir, key = payload
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    return key, compute_label(atoms, engine_name, settings, log_dir, key)


# ----------------------------------------------------------------------------------------------------------
# the store
# ----------------------------------------------------------------------------------------------------------
def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def _write_row(db, atoms, key: str, engine: Engine, settings: LabelSettings, res: dict[str, Any]) -> int:
    settings_all = {**settings.to_dict(), "physics": engine.physics(settings)}
    if "kpts" in res:
        settings_all["kpts_used"] = res["kpts"]
    return write_label_row(db, atoms, key, engine.name, engine.version(), settings_all, res)


def write_label_row(
    db,
    atoms,
    key: str,
    engine_name: str,
    engine_version: str,
    settings_all: dict[str, Any],
    res: dict[str, Any],
) -> int:
    """Write one label row (one SQLite transaction). ``res`` as returned by ``compute_label``."""
    from ase.calculators.singlepoint import SinglePointCalculator

    rec = atoms.copy()
    rec.calc = None
    if res["converged"]:
        results = {"energy": res["energy"], "forces": res["forces"]}
        if "stress" in res:
            results["stress"] = res["stress"]
        if "magmom" in res:
            results["magmom"] = res["magmom"]
            results["magmoms"] = res["magmoms"]
        rec.calc = SinglePointCalculator(rec, **results)
    kvp: dict[str, Any] = {
        "label_key": key,
        "struct_hash": db_hash_value(key.split("-")[0]),
        "settings_hash": db_hash_value(key.split("-")[1]),
        "engine": engine_name,
        "engine_version": engine_version,
        "converged": bool(res["converged"]),
        "status": res["status"],
        "n_attempts": len(res.get("attempts", [])),
        "wall_s": float(res["wall_s"]),
    }
    if res.get("n_scf") is not None:
        kvp["n_scf"] = int(res["n_scf"])
    for k in RECORD_KEYS + EXTRA_KEYS:
        v = rec.info.get(k)
        if isinstance(v, str) and _numeric_string(v):
            continue  # ASE db refuses strings that read as numbers (e.g. n_sites "3"); kept in data["info"]
        if isinstance(v, bool | int | float | str | np.integer | np.floating) and not isinstance(v, np.bool_):
            kvp[k] = v.item() if isinstance(v, np.generic) else v
    data = {
        "settings": json.dumps(settings_all, sort_keys=True),
        "attempts": json.dumps(_jsonable(res.get("attempts", []))),
        "error": res.get("error", ""),
        "info": json.dumps({k: _jsonable(v) for k, v in rec.info.items() if _is_json(v)}, sort_keys=True),
    }
    return db.write(rec, key_value_pairs=kvp, data=data)


def db_hash_value(h: str) -> str:
    """A hex hash as an ASE-db value: ASE refuses strings that read as numbers, so all-digit hashes get 'h'."""
    return f"h{h}" if _numeric_string(h) else h


def _numeric_string(v: str) -> bool:
    if v.strip().lower() in ("true", "false"):
        return True
    try:
        float(v)
        return True
    except ValueError:
        return False


def _is_json(v: Any) -> bool:
    try:
        json.dumps(_jsonable(v))
        return True
    except (TypeError, ValueError):
        return False


def done_keys(db_path: str | os.PathLike, include_failed: bool = True) -> set[str]:
    """Label keys already in the store (``include_failed=False``: converged rows only)."""
    if not Path(db_path).exists():
        return set()
    import ase.db

    db = ase.db.connect(str(db_path))
    sel = "label_key" if include_failed else "label_key,converged=True"
    return {row.label_key for row in db.select(sel)}


#: Å. The same relaxation repeated in a later session (same model, code and torch) reproduces positions to
#: ~1e-6-1e-4 Å, not bit for bit: the 1e-5 Å rounding of the structure hash then differs in some coordinate,
#: so an exact key alone sent already-labelled geometries back to DFT (measured in session 10 on 34 re-screened
#: structures: largest deviation 1.2e-4 Å, Pd2@5Na+H@top_X1, whose repeated single point moved the energy by
#: 1.8e-5 eV). Within 1e-3 Å the energy moves by at most sum_i |F_i| x 1e-3 Å, ~1e-3 eV for these cells.
MATCH_TOL = 1e-3


class _NearIndex:
    """Stored labels of one settings hash, by atomic numbers, for a tolerant geometry lookup."""

    def __init__(self, db_path, sh: str, converged_only: bool, tol: float):
        self.tol = float(tol)
        self.rows: dict[tuple[int, ...], list[tuple[str, np.ndarray, np.ndarray, tuple[bool, ...]]]] = {}
        if self.tol <= 0 or not Path(db_path).exists():
            return
        import ase.db

        sel = {"settings_hash": db_hash_value(sh)}
        if converged_only:
            sel["converged"] = True
        for row in ase.db.connect(str(db_path)).select(**sel):
            self.rows.setdefault(tuple(int(z) for z in row.numbers), []).append(
                (
                    row.label_key,
                    np.asarray(row.positions),
                    np.asarray(row.cell),
                    tuple(bool(p) for p in row.pbc),
                )
            )

    def find(self, atoms) -> str | None:
        """Key of a stored label within ``tol`` Å of ``atoms`` (positions and cell), else None."""
        for key, pos, cell, pbc in self.rows.get(tuple(int(z) for z in atoms.numbers), ()):
            if pbc != tuple(bool(p) for p in atoms.pbc):
                continue
            if (
                np.abs(cell - atoms.cell.array).max() <= self.tol
                and np.abs(pos - atoms.positions).max() <= self.tol
            ):
                return key
        return None


@dataclass
class LabelReport:
    """What one ``label_structures`` call did. wall_s in s; core_s = sum of per-label wall times (s)."""

    total: int = 0
    skipped: int = 0
    labelled: int = 0
    converged: int = 0
    failed: int = 0
    core_s: float = 0.0
    wall_s: float = 0.0
    keys: list[str] = field(default_factory=list)


def label_structures(
    structures: Iterable[Any],
    engine: str | Engine,
    settings: LabelSettings | None = None,
    db_path: str | os.PathLike = "labels.db",
    workers: int = 1,
    progress: bool = True,
    max_labels: int | None = None,
    retry_failed: bool = False,
    log_dir: str | os.PathLike | None = None,
    on_row: Callable[[str, dict[str, Any]], None] | None = None,
    match_tol: float = MATCH_TOL,
) -> LabelReport:
    """Label every structure not yet in ``db_path`` (resumable); returns counts.

    A structure whose exact key is missing reuses the label of a stored structure with the same atoms,
    cell and pbc whose positions agree within ``match_tol`` Å (:class:`_NearIndex`; 0 turns this off).

    Finished rows (converged or flagged) are skipped; ``retry_failed=True`` recomputes flagged ones (the old
    row stays, a new row is added). ``workers`` > 1 starts that many single-threaded processes; only this
    process writes the database. ``max_labels`` caps how many new labels this call computes. ``on_row(key,
    result)`` is called after each row is written (e.g. to refresh a README).
    """
    import ase.db

    settings = settings or LabelSettings()
    eng = get_engine(engine) if isinstance(engine, str) else engine
    structures = list(structures)
    eng.check(structures)
    if workers < 1:
        raise InputError(f"--workers {workers} is not allowed; allowed: an integer >= 1")
    if workers > 1 and eng.name not in _BUILTIN and not eng.name.startswith("ase:"):
        raise InputError(f"engine '{eng.name}' is not importable by worker processes; allowed: --workers 1")
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    have = done_keys(db_path, include_failed=not retry_failed)
    near = _NearIndex(db_path, settings_hash(eng, settings), retry_failed, match_tol)
    report = LabelReport(total=len(structures))
    todo: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for atoms in structures:
        key = label_key(atoms, eng, settings)
        if key not in have and key not in seen:
            key = near.find(atoms) or key
        report.keys.append(key)
        if key in have or key in seen:
            report.skipped += 1
            continue
        seen.add(key)
        todo.append((key, atoms))
    if max_labels is not None:
        todo = todo[: max(0, max_labels)]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"label [{eng.name}]", unit="label", dynamic_ncols=True)
    db = ase.db.connect(str(db_path))
    logs = str(log_dir) if log_dir is not None else str(Path(db_path).parent / "logs")
    by_key = dict(todo)
    saved: dict[str, str | None] = {}

    def record(key: str, res: dict[str, Any]) -> None:
        _write_row(db, by_key[key], key, eng, settings, res)
        report.labelled += 1
        report.core_s += float(res["wall_s"])
        if res["converged"]:
            report.converged += 1
        else:
            report.failed += 1
        if on_row is not None:
            on_row(key, res)
        if bar is not None:
            bar.set_postfix_str(f"{by_key[key].info.get(K.NAME, key)}: {res['status']}", refresh=False)
            bar.update(1)

    try:
        if workers == 1 or len(todo) <= 1:
            for key, atoms in todo:
                record(key, compute_label(atoms, eng, settings, logs, key))
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            saved = {v: os.environ.get(v) for v in _THREAD_VARS}
            os.environ.update({v: "1" for v in _THREAD_VARS})  # children inherit it before importing numpy
            pool = ProcessPoolExecutor(
                max_workers=min(workers, len(todo)), mp_context=mp.get_context("spawn")
            )
            try:
                futs = [pool.submit(_worker, (atoms, eng.name, settings, logs, key)) for key, atoms in todo]
                for fut in as_completed(futs):
                    record(*fut.result())
            except BaseException:  # interrupted: stop the workers now, finished rows are already written
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.terminate()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
    finally:
        if bar is not None:
            bar.close()
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old
    report.wall_s = time.perf_counter() - t0
    return report


# ----------------------------------------------------------------------------------------------------------
# reading the store
# ----------------------------------------------------------------------------------------------------------
def iter_labels(
    db_path: str | os.PathLike,
    engine: str | None = None,
    converged_only: bool = True,
    settings_hash: str | None = None,
) -> Iterable[Any]:
    """Yield labelled Atoms (SinglePointCalculator: energy, forces) with the row's provenance in ``info``."""
    import ase.db

    if not Path(db_path).exists():
        raise InputError(
            f"label database '{db_path}' does not exist; allowed: a database written by `screen label`"
        )
    db = ase.db.connect(str(db_path))
    query: list[str] = ["label_key"]
    if engine:
        query.append(f"engine={engine}")
    if settings_hash:
        query.append(f"settings_hash={db_hash_value(settings_hash)}")
    if converged_only:
        query.append("converged=True")
    for row in db.select(",".join(query)):
        atoms = row.toatoms(add_additional_information=False)
        info = json.loads(row.data.get("info", "{}")) if row.data else {}
        atoms.info.update(info)
        atoms.info.update({k: v for k, v in row.key_value_pairs.items()})
        atoms.info["reference"] = row.engine
        atoms.info["reference_settings"] = row.data.get("settings", "{}") if row.data else "{}"
        if not row.converged and atoms.calc is not None:
            atoms.calc = None
        yield atoms


def write_extxyz_atomic(path: str | os.PathLike, frames: Sequence[Any]) -> None:
    """Write frames to extxyz via a temp file + rename (never a half-written file)."""
    import io

    from ase.io import write

    buf = io.StringIO()
    write(buf, list(frames), format="extxyz")
    atomic_write_text(path, buf.getvalue())


def export_training_set(
    db_path: str | os.PathLike,
    out: str | os.PathLike,
    engine: str | None = None,
    converged_only: bool = True,
    settings_hash: str | None = None,
) -> int:
    """Write converged labels of ``db_path`` (optionally one engine / settings) to extxyz; returns the count.

    Flagged rows (``converged=False``) have no energy and are never exported.
    """
    frames = labelled_frames(db_path, engine, settings_hash)
    write_extxyz_atomic(out, frames)
    return len(frames)


def labelled_frames(db_path: str | os.PathLike, engine: str | None = None, settings_hash: str | None = None):
    """Converged labels (optionally one engine / settings) as Atoms with energy and forces."""
    return [
        a
        for a in iter_labels(db_path, engine, converged_only=True, settings_hash=settings_hash)
        if a.calc is not None
    ]


def db_summary(db_path: str | os.PathLike) -> dict[str, Any]:
    """Counts per engine / status / metal / motif, core-hours, and the settings of each settings hash."""
    import ase.db

    if not Path(db_path).exists():
        raise InputError(
            f"label database '{db_path}' does not exist; allowed: a database written by `screen label`"
        )
    db = ase.db.connect(str(db_path))
    out: dict[str, Any] = {
        "rows": 0,
        "converged": 0,
        "failed": 0,
        "core_hours": 0.0,
        "by_engine": {},
        "by_metal": {},
        "by_motif": {},
        "by_kind": {},
        "settings": {},
        "labels": [],
    }
    for row in db.select("label_key"):
        kv = row.key_value_pairs
        out["rows"] += 1
        ok = bool(kv.get("converged"))
        out["converged" if ok else "failed"] += 1
        out["core_hours"] += float(kv.get("wall_s", 0.0)) / 3600.0
        eng = kv.get("engine", "?")
        e = out["by_engine"].setdefault(eng, {"rows": 0, "converged": 0, "core_hours": 0.0})
        e["rows"] += 1
        e["converged"] += int(ok)
        e["core_hours"] += float(kv.get("wall_s", 0.0)) / 3600.0
        metal = kv.get(K.METAL)
        if metal:
            pair = metal if kv.get(K.METAL2, metal) == metal else f"{metal}{kv.get(K.METAL2)}"
            out["by_metal"][pair] = out["by_metal"].get(pair, 0) + int(ok)
        motif = kv.get(K.MOTIF)
        if motif:
            out["by_motif"][motif] = out["by_motif"].get(motif, 0) + int(ok)
        kind = "host+H" if kv.get(K.SITE) else ("host" if metal else "molecule / other")
        out["by_kind"][kind] = out["by_kind"].get(kind, 0) + int(ok)
        sh = kv.get("settings_hash", "?")
        settings = json.loads(row.data.get("settings", "{}")) if row.data else {}
        out["labels"].append(
            {
                "id": row.id,
                "name": kv.get(K.NAME, row.formula),
                "engine": eng,
                "settings_hash": sh,
                "kpts": settings.get("kpts_used"),
                "status": kv.get("status"),
                "energy": row.get("energy"),
                "magmom": row.get("magmom"),
                "n_scf": kv.get("n_scf"),
                "n_attempts": kv.get("n_attempts"),
                "wall_s": float(kv.get("wall_s", 0.0)),
            }
        )
        if sh not in out["settings"] and row.data:
            out["settings"][sh] = {
                "engine": eng,
                **json.loads(row.data.get("settings", "{}")).get("physics", {}),
            }
    return out


def write_readme(db_path: str | os.PathLike, out: str | os.PathLike, title: str = "DFT labels") -> str:
    """Render ``db_summary`` as a README (settings, counts per metal and motif, core-hours); atomic write."""
    s = db_summary(db_path)
    lines = [
        f"# {title}",
        "",
        f"Generated from `{Path(db_path).name}` by `screening.labelling.write_readme` "
        f"on {time.strftime('%Y-%m-%d %H:%M')}. Do not edit by hand.",
        "",
        f"Rows: {s['rows']} ({s['converged']} converged, {s['failed']} flagged non-converged or failed); "
        f"core-hours spent: {s['core_hours']:.2f}.",
        "",
        "## Settings",
        "",
        "| settings hash | engine | physics |",
        "|---|---|---|",
    ]
    for sh, st in s["settings"].items():
        phys = ", ".join(f"{k}={v}" for k, v in st.items() if k != "engine" and v is not None)
        lines.append(f"| `{sh}` | {st['engine']} | {phys} |")
    lines += ["", "## By engine", "", "| engine | rows | converged | core-hours |", "|---|---|---|---|"]
    for eng, e in s["by_engine"].items():
        lines.append(f"| {eng} | {e['rows']} | {e['converged']} | {e['core_hours']:.2f} |")
    lines += ["", "## Converged labels per metal pair", "", "| metal | labels |", "|---|---|"]
    lines += [f"| {m} | {n} |" for m, n in sorted(s["by_metal"].items())]
    lines += ["", "## Converged labels per motif", "", "| motif | labels |", "|---|---|"]
    lines += [f"| {m} | {n} |" for m, n in sorted(s["by_motif"].items())]
    lines += ["", "## Converged labels per kind", "", "| kind | labels |", "|---|---|"]
    lines += [f"| {m} | {n} |" for m, n in sorted(s["by_kind"].items())]
    lines += [
        "",
        "## Labels",
        "",
        "| id | structure | engine | settings | k-points | status | energy (eV) | "
        "total moment (μB) | SCF iterations (attempts) | wall (min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["labels"]:
        k = "x".join(str(x) for x in r["kpts"]) if r["kpts"] else "–"
        e = f"{r['energy']:.4f}" if r["energy"] is not None else "–"
        m = f"{abs(r['magmom']):.2f}" if r["magmom"] is not None else "–"
        lines.append(
            f"| {r['id']} | {r['name']} | {r['engine']} | `{r['settings_hash']}` | {k} | {r['status']} | "
            f"{e} | {m} | {r['n_scf'] or '–'} ({r['n_attempts']}) | {r['wall_s'] / 60:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    atomic_write_text(out, text)
    return text


def settings_from_args(args: Any) -> LabelSettings:
    """Build LabelSettings from CLI args: ``--preset`` then the individual overrides that were given."""
    base = get_preset(getattr(args, "preset", None) or DEFAULT_PRESET)
    over: dict[str, Any] = {}
    for name in ("ecut", "kdens", "smearing", "maxiter", "model", "xc"):
        v = getattr(args, name, None)
        if v is not None:
            over[name] = v
    kpts = getattr(args, "kpts", None)
    if kpts:
        try:
            k = tuple(int(x) for x in str(kpts).lower().replace("x", ",").split(","))
        except ValueError as exc:
            raise InputError(f"bad --kpts '{kpts}'; allowed: three integers like 3x3x1") from exc
        if len(k) != 3 or min(k) < 1:
            raise InputError(f"bad --kpts '{kpts}'; allowed: three positive integers like 3x3x1")
        over["kpts"] = k
    if getattr(args, "no_spin", False):
        over["spinpol"] = False
    if getattr(args, "calc_kwargs", None):
        over["calc_kwargs"] = args.calc_kwargs
    if getattr(args, "stress", False):
        over["stress"] = True
    for name, lo in (("ecut", 50.0), ("kdens", 0.1), ("smearing", 0.0), ("maxiter", 1)):
        if name in over and over[name] < lo:
            raise InputError(f"--{name} {over[name]} is too small; allowed: >= {lo}")
    s = replace(base, **over)
    if s.calc_kwargs != "{}":
        _calc_kwargs(s)
    return s


# ----------------------------------------------------------------------------------------------------------
# queues of structures
# ----------------------------------------------------------------------------------------------------------
def h2_reference(vacuum: float = 5.0) -> Any:
    """H2 molecule centred in a periodic box with ``vacuum`` Å on every side (gamma point by k-density)."""
    from ase.build import molecule

    h2 = molecule("H2")
    h2.center(vacuum=vacuum)
    h2.pbc = True
    h2.info.update({K.NAME: "H2", "frame": "reference"})
    return h2


def build_queue(
    metals: Sequence[str],
    motifs: Sequence[Any],
    pairs: str = "homo",
    supercell: str = "4x4",
    with_h: bool = False,
    sites: Sequence[str] | None = None,
    h2: bool = False,
    order: str = "motif",
) -> list[Any]:
    """Hosts (and H* states) in labelling order: the H2 reference first (``h2``), then each host with its H*
    states right after it, so complete ΔE_H triples finish first. ``order="motif"``: motifs outer, metals
    inner; ``"metal"``: metals outer. ``sites``: H* site labels to keep (None = all distinct sites)."""
    from structures.enumerate import metal_pairs
    from structures.host import build_host
    from structures.sites import add_h, h_sites

    if order not in ("motif", "metal"):
        raise InputError(f"unknown order '{order}'; allowed: motif, metal")
    pair_list = metal_pairs(list(metals), pairs)
    combos = (
        [(p, m) for m in motifs for p in pair_list]
        if order == "motif"
        else [(p, m) for p in pair_list for m in motifs]
    )
    out: list[Any] = [h2_reference()] if h2 else []
    for (m1, m2), motif in combos:
        host = build_host(m1, motif, metal2=m2, supercell=supercell)
        out.append(host)
        if with_h:
            hs = h_sites(host)
            if sites is not None:
                known = [s.label for s in hs]
                keep = [s for s in hs if s.label in sites]
                if not keep:
                    raise InputError(
                        f"no H* site {','.join(sites)} on {host.info[K.NAME]}; allowed: {', '.join(known)}"
                    )
                hs = keep
            out.extend(add_h(host, s) for s in hs)
    return out


def read_structures(paths: Sequence[str]) -> list[Any]:
    """Every frame of every file (ASE-readable: extxyz, cif, POSCAR, ...); InputError naming a bad file."""
    from ase.io import read

    frames: list[Any] = []
    for p in paths:
        if not Path(p).is_file():
            raise InputError(
                f"input file '{p}' does not exist; allowed: an ASE-readable structure file (extxyz, ...)"
            )
        try:
            got = read(p, index=":", do_not_split_by_at_sign=True)
        except Exception as exc:  # noqa: BLE001 - any parser failure is a user-facing input error
            raise InputError(
                f"cannot read structures from '{p}' ({type(exc).__name__}: {exc})".splitlines()[0]
            ) from exc
        frames.extend(got if isinstance(got, list) else [got])
    if not frames:
        raise InputError(f"no structures in {', '.join(paths)}; allowed: files with at least one frame")
    return frames
