"""DFT validation of selected candidates: reference energies of the model-relaxed host, host+H* and H2,
then ΔGH*(DFT) written back into the results store next to the model's ΔGH*.

    ΔGH*(DFT) = E(host+H*) − E(host) − ½ E(H2) + correction       (eV; the correction of the model's row)

The reference engine and its settings come from :mod:`screening.labelling` (``gpaw``, ``emt``, ``sevenn``,
``ase:<module>:<Class>``; presets ``pw400`` ...): nothing about GPAW is configured here. The calculations go
through ``label_structures`` into a label store (an ASE database, default ``<results>_dft_labels.db``): it is
resumable (a re-run skips finished single points) and its rows are ordinary training labels for the active
learning loop (``screening.labelling.export_training_set``). With ``relax``, each structure is first relaxed
with the engine (ASE BFGS, ``steps`` at most, ``fmax`` eV/Å) and the relaxed geometry is labelled.

Written back on the ΔG row (``kind="dg"``), under the store's lock, as soon as the candidate's host, host+H*
and H2 are labelled (a run killed half way keeps the finished candidates; the end of the run writes all): ``dft_dg``, ``dft_de`` (eV),
``dft_engine``,
``dft_settings`` ("<preset>:<settings hash>"), ``dft_relax``, ``dft_status`` (ok | unconverged | error |
partial: no DFT at the model's site, but at other sites of the host, so only ``dft_dg_host`` is written),
``dft_site``, ``dft_wall_s`` (s, sum over the three calculations), ``dft_date``, ``dft_labels`` (label store);
``dft_dg_host``, ``dft_site_host``, ``dft_host_classes``: the host's lowest DFT ΔGH* over the sites this
validation labelled (the best site and, with ``site_classes``, the best site of each other binding class),
that site, and the binding classes those sites cover ("metal,N"). ΔGH* of a host is a minimum over sites, so
``dft_dg`` (same site as the model's ΔGH*) measures the model's energy error there, ``dft_dg_host`` whether
the screen found the right site; with one binding class labelled, ``dft_dg_host`` is an upper bound.
``dft_mm_force_host`` / ``dft_mm_force`` (eV/Å): the engine's force along the metal–metal axis on the host and
on the H* state (negative: the pair wants to be closer; :mod:`screening.mm_bond`), which says how far the
model's pair geometry is from the engine's. With ``bond_line``, host and host+H* each get one more single
point with the pair moved toward the engine's bond minimum (:func:`screening.mm_bond.line_step`); the two
points give the bond stiffness (``dft_mm_k_host`` / ``dft_mm_k``, eV/Å²) and ΔGH* with the M–M
bond relaxed in both states (``dft_dg_bond``; ``dft_bond_status`` ok or what is missing).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from structures.common import InputError

from .export import Candidate, State, load_candidates


@dataclass(frozen=True)
class ValidateConfig:
    """engine: labelling engine name. preset: name recorded in ``dft_settings``. relax: short engine
    relaxation before the single point; fmax (eV/Å) and steps bound it. workers: processes for the labels.
    reuse_only: compute nothing; attach the labels the label store already holds for these geometries (a
    screen repeated with the same network, e.g. after ``screen anchor``), and leave the other rows as they are.
    site_classes: also label, per selected host, the model's lowest H* state of each of these binding
    classes (``metal``, ``N``, ``C``: :func:`screening.anchoring.site_class`) besides the best site, so the
    DFT ΔGH* of a host is a minimum over sites of every class and a class-dependent error can be fitted
    (``screen anchor --site-classes``); the ΔG row keeps the best site's DFT value. bond_line: one more
    single point per host and host+H* along the metal–metal axis, and ΔGH* with that bond relaxed (the
    minimum of the cubic through both points, :func:`screening.mm_bond.line_minimum`): the model's pair
    geometry is the largest strain in a single point at its geometry (docs/dft.md, thirteenth measurement),
    at twice the DFT cost rather than the ~30x of ``relax``."""

    engine: str = "gpaw"
    preset: str = "pw500"
    relax: bool = False
    fmax: float = 0.05
    steps: int = 30
    workers: int = 1
    reuse_only: bool = False
    site_classes: tuple[str, ...] = ()
    bond_line: bool = False


@dataclass
class ValidationResult:
    """One validated candidate (energies in eV)."""

    host: str
    dg_row_id: int
    site: str
    dg_model: float
    dg_std: float
    status: str
    dft_dg: float = float("nan")
    dft_de: float = float("nan")
    dft_dg_host: float = float("nan")
    dft_site_host: str = ""
    dft_host_classes: str = ""
    wall_s: float = 0.0
    energies: dict[str, float] | None = None
    error: str = ""
    mm_force_host: float = float("nan")
    mm_force: float = float("nan")
    dft_dg_bond: float = float("nan")
    mm_k_host: float = float("nan")
    mm_k: float = float("nan")
    bond_status: str = (
        ""  # "" (no bond line asked), "pending" (its labels not all done), "ok", or what failed
    )
    dft_fmax: float = float("nan")  # eV/Å, largest DFT force on any atom of the host and host+H* points
    dft_h_force: float = float("nan")  # eV/Å, DFT force on the H of the host+H* point

    @property
    def geometry_failure(self) -> bool:
        """The DFT single points say the model's geometry is far from any DFT minimum (a force on an atom
        above ``MAX_STATE_FORCE`` or on H above ``MAX_H_FORCE``): its ΔGH* error measures the geometry, not
        the energy, and the benchmarks and the report leave it out of their statistics."""
        from screening.bench_model import is_geometry_failure

        return is_geometry_failure(self.dft_fmax, self.dft_h_force)


def default_labels_db(db_path: str | os.PathLike) -> Path:
    """``results.db`` -> ``results_dft_labels.db`` beside it."""
    p = Path(db_path)
    return p.with_name(f"{p.stem}_dft_labels.db")


def relax_with_engine(
    atoms, engine, settings, fmax: float, steps: int, log_dir: Path
) -> tuple[Any, dict[str, Any]]:
    """BFGS with the engine's first SCF attempt; returns (relaxed copy, {steps, fmax, wall_s, error})."""
    from ase.optimize import BFGS

    from screening.labelling import structure_hash

    log_dir.mkdir(parents=True, exist_ok=True)
    work = atoms.copy()
    attempt = engine.attempts(settings)[0]
    tag = f"{structure_hash(atoms)}.relax"
    t0 = time.perf_counter()
    info: dict[str, Any] = {"error": ""}
    try:
        work.calc = engine.make(
            work, settings, attempt, str(log_dir / f"{tag}.txt") if engine.has_scf else None
        )
        opt = BFGS(work, logfile=str(log_dir / f"{tag}.log"))
        opt.run(fmax=fmax, steps=steps)
        info.update(steps=int(opt.nsteps), fmax=float(np.abs(work.get_forces()).max()))
    except (KeyboardInterrupt, InputError):
        raise
    except Exception as exc:  # noqa: BLE001 - the single point that follows reports the state
        info["error"] = f"{type(exc).__name__}: {exc}"[:300]
    info["wall_s"] = time.perf_counter() - t0
    out = atoms.copy()
    out.positions = work.positions
    out.calc = None
    return out, info


def class_states(db_path: str | os.PathLike, selected, classes: Sequence[str]) -> list[State]:
    """Per selected ΔG row: the relaxed H* state of lowest model energy (``e_relaxed``) of each binding class
    in ``classes`` except the best site's own class; states flagged h_desorbed or nonfinite are skipped, and
    so are states whose H* stretches the metal pair by more than ``FlagConfig.max_mm_stretch`` against the
    relaxed host (possible spurious minima). When the best site itself is such a state (the row is flagged
    ``pair_stretched``), its own class is searched too, so the host gets a DFT value at a sane site of it."""
    from screening.anchoring import site_class
    from screening.flags import pair_stretch, stretch_flags
    from screening.store import load_structures

    out: list[State] = []
    stores: dict[tuple[str, str], Any] = {}  # (model hash, relax hash) -> relaxed rows: one read each
    for _, r in selected.iterrows():
        mh, rh = str(r.get("structure_model_hash") or r["model_hash"]), str(r["relax_hash"])
        if (mh, rh) not in stores:
            stores[(mh, rh)] = load_structures(db_path, state="relaxed", model_hash=mh, relax_hash=rh)
        rows = stores[(mh, rh)]
        if rows.empty or "site" not in rows:
            continue
        mine = rows[rows["host"] == str(r["host"])]
        bare = mine[mine["site"].fillna("").astype(str) == ""]
        host_atoms = bare["atoms"].iloc[0] if len(bare) else None
        rows = mine[mine["site"].fillna("").astype(str) != ""]
        sites = [str(x) for x in rows["site"]]
        kinds = [site_class(a) for a in rows["atoms"]]
        stretched_best = "pair_stretched" in str(r.get("flags") or "").split(",")
        own = set() if stretched_best else {c for c, site in zip(kinds, sites) if site == str(r["best_site"])}
        best: dict[str, Any] = {}
        for (_, q), site, c in zip(rows.iterrows(), sites, kinds):
            flags = str(q.get("flags") or "").split(",")
            energy = float(q.get("e_relaxed", float("nan")))
            if c not in classes or c in own or "h_desorbed" in flags or "nonfinite" in flags:
                continue
            if site == str(r["best_site"]):
                continue  # labelled as the candidate itself
            if host_atoms is not None and stretch_flags(pair_stretch(host_atoms, q["atoms"])):
                continue
            if np.isfinite(energy) and (c not in best or energy < best[c][0]):
                best[c] = (energy, q, site)
        for c in classes:
            if c in best:
                _, q, site = best[c]
                out.append(State("host+H", str(q["name"]), q["atoms"], int(q["id"]), f"{r['host']}/H@{site}"))
    return out


def _label_energies(labels_db: Path, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{label_key: {converged, energy, wall_s, status, forces}} (the newest row of each key; forces (N, 3)
    eV/Å or None)."""
    import ase.db

    out: dict[str, dict[str, Any]] = {}
    db = ase.db.connect(str(labels_db))
    for key in set(keys):
        rows = sorted(db.select(label_key=key), key=lambda r: r.id)
        conv = [r for r in rows if r.get("converged")]
        r = conv[-1] if conv else (rows[-1] if rows else None)
        if r is None:
            continue
        out[key] = {
            "converged": bool(r.get("converged")),
            "status": r.get("status", "?"),
            "energy": float(r.energy) if r.get("converged") else float("nan"),
            "wall_s": float(r.get("wall_s", 0.0)),
            "forces": r.get("forces") if r.get("converged") else None,
        }
    return out


def h_neighbours_text(atoms, n: int = 2) -> str:
    """' (H now 1.64 Å from Ru, 2.67 Å from C)': the adsorbed H's ``n`` nearest atoms (minimum image) in a
    relaxed host+H structure, so a user can tell an H that moved to another sensible site from one squeezed
    between two atoms; '' when there is no structure or no H."""
    if atoms is None:
        return ""
    from structures import keys as SK

    symbols = atoms.get_chemical_symbols()
    ads = atoms.info.get(SK.ADSORBATE_INDEX)  # the index the flags use; else the last H (add_h appends it)
    h = (
        [int(ads)]
        if ads not in (None, "") and int(ads) >= 0
        else [i for i, x in enumerate(symbols) if x == "H"]
    )
    if not h or len(atoms) < 2:
        return ""
    others = [i for i in range(len(atoms)) if i != h[-1]]
    d = atoms.get_distances(h[-1], others, mic=bool(atoms.pbc.any()))
    near = sorted(zip(d, others))[:n]
    return " (H now " + ", ".join(f"{dist:.2f} Å from {symbols[i]}" for dist, i in near) + ")"


def validate(
    db_path: str | os.PathLike,
    selected,
    config: ValidateConfig = ValidateConfig(),
    settings=None,
    labels_db: str | os.PathLike | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> list[ValidationResult]:
    """Label host, host+H* and H2 of every selected ΔG row with the engine and write ΔGH*(DFT) back.

    ``selected``: rows of :func:`reports.tables.select`. ``settings``: ``screening.labelling.LabelSettings``
    (default: the ``config.preset`` preset). InputError: unknown engine, engine not installed (GPAW: the

    command), elements the engine cannot handle.
    """
    from screening import labelling as L
    from screening.store import check_database

    if config.reuse_only and config.relax:
        raise InputError("--reuse-only attaches finished labels; it cannot --relax")
    if config.bond_line and config.relax:
        raise InputError(
            "--bond-line moves the metal pair of the model's geometry; --relax relaxes every atom: use one"
        )
    check_database(db_path, writable=True)  # a read-only store fails now, not after hours of DFT
    eng = L.get_engine(config.engine)
    settings = settings if settings is not None else L.get_preset(config.preset)
    cands: list[Candidate] = load_candidates(db_path, selected)
    if echo is not None and not config.relax and "flags" in selected:
        from screening.bench_model import MAX_H_FORCE, MAX_STATE_FORCE

        h_states = {c.host: s.atoms for c in cands for s in c.states if s.kind == "host+H"}
        for _, r in selected.iterrows():
            flags = str(r["flags"]).split(",")
            moved = [f for f in ("h_migrated", "h_desorbed") if f in flags]
            if moved:
                where = h_neighbours_text(h_states.get(r["host"]))
                echo(
                    f"warning: {r['host']} H@{r['best_site']} is flagged {moved[0]}{where}: a single point at "
                    "that model geometry can sit far from any DFT minimum (the DFT benchmarks leave out a triple "
                    f"whose force on H exceeds {MAX_H_FORCE:g} eV/Å); --relax runs a short engine relaxation first"
                )
            if "pair_stretched" in flags:
                stretch = r.get("mm_stretch")
                by = (
                    f" by {float(stretch):+.2f} Å"
                    if stretch is not None and np.isfinite(float(stretch))
                    else ""
                )
                echo(
                    f"warning: {r['host']} H@{r['best_site']} is flagged pair_stretched (H* moved the metal pair "
                    f"apart{by} against the host): possibly a spurious minimum of the model, whose DFT single "
                    f"point is left out of the statistics if a force on an atom exceeds {MAX_STATE_FORCE:g} eV/Å"
                )
    states: list[State] = []
    extra = class_states(db_path, selected, config.site_classes) if config.site_classes else []
    for s in [s for c in cands for s in c.states] + extra:
        if all(s.folder != t.folder for t in states):
            states.append(s)
    eng.check([s.atoms for s in states])
    labels_db = Path(labels_db) if labels_db is not None else default_labels_db(db_path)
    log_dir = labels_db.parent / "logs"
    tag = "dft_relaxed" if config.relax else "dft_validation"
    structures: dict[str, Any] = {}
    relax_info: dict[str, dict[str, Any]] = {}
    for s in states:
        a = s.atoms.copy()
        a.calc = None
        a.info = {k: v for k, v in a.info.items() if v is not None}
        a.info.update(frame=tag, source=Path(db_path).name)
        if config.relax:
            if echo:
                echo(f"relaxing {s.name} with {eng.name} (<= {config.steps} steps) ...")
            a, relax_info[s.folder] = relax_with_engine(a, eng, settings, config.fmax, config.steps, log_dir)
        structures[s.folder] = a
    order = list(structures)
    batch = [structures[f] for f in order]
    sh = L.settings_hash(eng, settings)

    # label keys first (near matches to stored labels included, nothing computed), so each candidate can be
    # written back the moment its three single points are done: a long DFT run killed half way leaves the
    # finished candidates in the store, not only in the label store
    def label_keys(structs: list) -> list[str]:
        """The label-store keys of ``structs``, computing nothing."""
        return L.label_structures(
            structs, eng, settings, db_path=labels_db, progress=False, max_labels=0
        ).keys

    def compute(structs: list) -> None:
        """Label ``structs`` (finished ones are skipped), writing candidates back as their labels land."""
        L.label_structures(
            structs,
            eng,
            settings,
            db_path=labels_db,
            workers=config.workers,
            progress=progress,
            log_dir=log_dir,
            on_row=attach,
        )

    keys = label_keys(batch)
    key_of = dict(zip(order, keys))
    # bond line: folder -> (moved, f0, step, i, j); None until the first pass's forces have built it
    line: dict[str, tuple[Any, float, float, int, int]] | None = None

    def result(c: Candidate, got: dict[str, dict[str, Any]]) -> ValidationResult:
        res = _candidate_result(c, got, key_of, structures, extra, relax_info)
        if config.bond_line:
            if line is None:
                res.bond_status = "pending"
            else:
                _bond_line_result(res, c, got, key_of, line)
        return res

    # every label a candidate's result reads: its host, host+H* and H2, and its host's site-class states
    needs = {
        c.host: {key_of[s.folder] for s in c.states}
        | {key_of[s.folder] for s in extra if s.folder.startswith(f"{c.host}/H@")}
        for c in cands
    }
    announced: set[str] = set()

    def attach(key: str, res: dict[str, Any]) -> None:
        """After each new label: write back the candidates it completes or improves."""
        touched = [c for c in cands if key in needs[c.host]]
        got = _label_energies(labels_db, sorted(set().union(*(needs[c.host] for c in touched))))
        ready = [result(c, got) for c in touched if all(key_of[s.folder] in got for s in c.states)]
        if ready:
            write_back(db_path, ready, eng.name, f"{config.preset}:{sh}", config.relax, labels_db)
        for r in ready:
            if echo is not None and r.host not in announced:
                echo(f"done: {result_line(r, eng.name)}")
            announced.add(r.host)

    if not config.reuse_only:  # --reuse-only computes nothing: the keys above are all it needs
        compute(batch)
    got = _label_energies(labels_db, keys)
    if config.bond_line:  # second pass: the pair moved along its axis, from the first pass's DFT forces
        line = bond_line_structures(cands, structures, got, key_of)
        moved = list(line)
        batch2 = [line[f][0] for f in moved]
        keys2 = label_keys(batch2)
        key_of.update({f"{f}#bond": k for f, k in zip(moved, keys2)})
        for c in cands:
            needs[c.host] |= {key_of[f"{s.folder}#bond"] for s in c.states if s.folder in line}
        if batch2 and not config.reuse_only:
            if echo is not None:
                echo(
                    f"bond line: {len(batch2)} single point(s) with the metal pair moved toward {eng.name}'s minimum"
                )
            compute(batch2)
        got = _label_energies(labels_db, [*keys, *keys2])
    results = [result(c, got) for c in cands]
    # --reuse-only: a row with no label at all is left as it is; one with labels at other sites only is "partial"
    done = [r for r in results if not (config.reuse_only and r.status == "error")]
    write_back(db_path, done, eng.name, f"{config.preset}:{sh}", config.relax, labels_db)
    return results


def result_line(r: ValidationResult, engine: str, reuse_only: bool = False) -> str:
    """One line on a validated candidate: model vs engine ΔGH* (eV), the error in σ, the wall time, and the
    host's lowest labelled site when it is another one; or what is missing."""
    import math

    if math.isfinite(r.dft_dg):
        line = (
            f"{r.host} ({r.site}): model {r.dg_model:+.3f} ± {r.dg_std:.3f} eV, {engine} {r.dft_dg:+.3f} eV, "
            f"error {r.dg_model - r.dft_dg:+.3f} eV ({abs(r.dg_model - r.dft_dg) / r.dg_std:.1f}σ), "
            f"{r.wall_s:.0f} s"
        )
        if r.dft_site_host and r.dft_site_host != r.site:
            line += (
                f"; DFT's lowest labelled site is {r.dft_site_host}: {r.dft_dg_host:+.3f} eV "
                f"(classes {r.dft_host_classes})"
            )
        if r.geometry_failure:
            line += (
                f"; GEOMETRY FAILURE: {engine} puts {r.dft_fmax:.1f} eV/Å on an atom ({r.dft_h_force:.1f} on H) "
                "at the model's geometry, far from any DFT minimum: left out of the report's statistics"
            )
        return line + mm_force_note(r, engine) + bond_line_note(r, engine)
    if r.status == "partial":
        return (
            f"{r.host} ({r.site}): no DFT at the model's site ({r.error}); DFT's lowest labelled site is "
            f"{r.dft_site_host}: {r.dft_dg_host:+.3f} eV (classes {r.dft_host_classes}), model "
            f"{r.dg_model:+.3f} ± {r.dg_std:.3f} eV"
        )
    if reuse_only and r.status == "error":
        return f"{r.host} ({r.site}): not validated, no label in the store ({r.error})"
    return f"{r.host} ({r.site}): {r.status}: {r.error}"


def mm_force_note(r: ValidationResult, engine: str) -> str:
    """'; <engine> pulls the metal pair together with 5.06 eV/Å (host) ...' when the engine's force along the
    M–M axis exceeds :data:`MM_FORCE_NOTE` on the host or the H* state: the model-relaxed pair geometry is
    not the engine's, and the single point carries that strain; '' otherwise."""
    big = [(v, kind) for v, kind in ((r.mm_force_host, "host"), (r.mm_force, "H*")) if abs(v) > MM_FORCE_NOTE]
    if not big:
        return ""
    v, kind = max(big, key=lambda t: abs(t[0]))
    way = "pulls the metal pair together" if v < 0 else "pushes the metal pair apart"
    return f"; {engine} {way} with {abs(v):.2f} eV/Å ({kind}): the model's M–M distance is not {engine}'s" + (
        "" if r.bond_status else " (--bond-line relaxes that bond, --relax every atom)"
    )


def bond_line_note(r: ValidationResult, engine: str) -> str:
    """'; M–M bond relaxed: gpaw −1.150 eV (−0.062), K 26 / 31 eV/Å²' for a validation with a bond line, what is
    missing when it failed, '' without one."""
    import math

    if not r.bond_status:
        return ""
    if r.bond_status == "pending":
        return "; bond line: not labelled yet"
    if r.bond_status != "ok" or not math.isfinite(r.dft_dg):
        return f"; bond line: {r.bond_status}"
    return (
        f"; M–M bond relaxed: {engine} {r.dft_dg_bond:+.3f} eV ({r.dft_dg_bond - r.dft_dg:+.3f}), "
        f"K {r.mm_k_host:.0f} (host) / {r.mm_k:.0f} (H*) eV/Å²"
    )


def _candidate_result(
    c: Candidate,
    got: dict[str, dict[str, Any]],
    key_of: dict[str, str],
    structures: dict[str, Any],
    extra: Sequence[State],
    relax_info: dict[str, dict[str, Any]],
) -> ValidationResult:
    """The DFT ΔGH* of candidate ``c`` from the labels ``got`` (:func:`_label_energies`) of its host, host+H*
    and H2 (and of the ``extra`` site-class states of its host); ``status`` says what is missing."""
    from screening.anchoring import site_class

    folders = [s.folder for s in c.states]  # host, host+H, H2
    missing = {"converged": False, "status": "missing", "energy": float("nan"), "wall_s": 0.0}
    labs = [got.get(key_of[f], missing) for f in folders]
    wall = sum(lab["wall_s"] for lab in labs) + sum(relax_info.get(f, {}).get("wall_s", 0.0) for f in folders)
    res = ValidationResult(
        host=c.host,
        dg_row_id=c.dg_row_id,
        site=c.best_site,
        dg_model=c.dg,
        dg_std=c.dg_std,
        status="ok",
        wall_s=wall,
        energies={s.kind: lab["energy"] for s, lab in zip(c.states, labs)},
    )
    if labs[0]["converged"] and labs[2]["converged"]:  # host and H2: a ΔGH* for every labelled site
        e_host, e_h2 = labs[0]["energy"], labs[2]["energy"]
        sites: dict[str, tuple[float, str]] = {}
        if labs[1]["converged"]:
            res.dft_de = labs[1]["energy"] - e_host - 0.5 * e_h2
            res.dft_dg = res.dft_de + c.correction
            sites[c.best_site] = (res.dft_dg, site_class(structures[folders[1]]))
        for s in extra:
            lab = got.get(key_of[s.folder], {})
            if s.folder.startswith(f"{c.host}/H@") and lab.get("converged"):
                dg = lab["energy"] - e_host - 0.5 * e_h2 + c.correction
                sites[s.folder.split("/H@", 1)[1]] = (dg, site_class(structures[s.folder]))
        if sites:
            res.dft_site_host = min(sites, key=lambda k: sites[k][0])
            res.dft_dg_host = sites[res.dft_site_host][0]
            res.dft_host_classes = ",".join(sorted({cls for _, cls in sites.values()}))
    res.mm_force_host, res.mm_force = (
        _mm_force(structures[f], lab.get("forces")) for f, lab in zip(folders[:2], labs[:2])
    )
    res.dft_fmax, res.dft_h_force = _geometry_forces(structures[folders[1]], labs[0], labs[1])
    if not all(lab["converged"] for lab in labs):
        bad = [f"{s.kind}: {lab['status']}" for s, lab in zip(c.states, labs) if not lab["converged"]]
        res.status = (
            "unconverged"
            if all(lab["status"] == "unconverged" for lab in labs if not lab["converged"])
            else "error"
        )
        if np.isfinite(res.dft_dg_host):  # the model's site failed, other sites of the host did not
            res.status = "partial"
        res.error = "; ".join(bad)
    return res


def bond_line_structures(
    cands: Sequence[Candidate],
    structures: dict[str, Any],
    got: dict[str, dict[str, Any]],
    key_of: dict[str, str],
) -> dict[str, tuple[Any, float, float, int, int]]:
    """The second points of the bond lines: {folder: (structure, f0 eV/Å, step Å, i, j)} for every host and
    host+H* whose first single point converged with forces, the metal pair (i, j) moved by
    :func:`screening.mm_bond.line_step` of its engine force f0. Deterministic in the stored forces, so a
    re-run finds the same structures (and their labels) again."""
    from screening.mm_bond import bond_force, line_step, metal_pair_indices, stretch_pair

    out: dict[str, tuple[Any, float, float, int, int]] = {}
    for c in cands:
        for s in c.states:
            lab = got.get(key_of[s.folder], {})
            if s.kind not in ("host", "host+H") or lab.get("forces") is None:
                continue
            atoms = structures[s.folder]
            try:
                i, j = metal_pair_indices(atoms)
            except ValueError:
                continue
            f0 = bond_force(atoms, lab["forces"], i, j)
            step = line_step(f0)
            if step == 0.0:
                continue
            moved = stretch_pair(atoms, i, j, step)
            moved.info.update(frame="dft_bond_line", bond_step=step)
            out[s.folder] = (moved, f0, step, i, j)
    return out


def _bond_line_result(
    res: ValidationResult,
    c: Candidate,
    got: dict[str, dict[str, Any]],
    key_of: dict[str, str],
    line: dict[str, tuple[Any, float, float, int, int]],
) -> None:
    """Fill ``res``'s bond-line fields from the labels ``got``: the minimum of host and host+H*
    along the M–M axis (:func:`screening.mm_bond.line_minimum`) and ΔGH* between them."""
    from screening.mm_bond import bond_force, line_minimum

    minima, stiffness = {}, {}
    for s in c.states:
        if s.kind == "H2":
            continue
        lab0 = got.get(key_of[s.folder], {})
        if not lab0.get("converged"):
            res.bond_status = "pending" if not lab0 else f"no bond line ({s.kind} unconverged)"
            return
        if s.folder not in line:
            res.bond_status = f"no bond line ({s.kind}: no metal pair or no forces)"
            return
        lab1 = got.get(key_of.get(f"{s.folder}#bond", ""), {})
        if not lab1:
            res.bond_status = "pending"
            return
        if not lab1.get("converged"):
            res.bond_status = f"{s.kind} bond point {lab1.get('status', 'unconverged')}"
            return
        moved, f0, step, i, j = line[s.folder]
        res.wall_s += float(lab1.get("wall_s", 0.0))  # the DFT cost of the candidate includes its bond line
        f1 = bond_force(moved, lab1["forces"], i, j)
        minima[s.kind], stiffness[s.kind] = line_minimum(lab0["energy"], f0, lab1["energy"], f1, step)
    res.mm_k_host, res.mm_k = stiffness["host"], stiffness["host+H"]
    h2 = got.get(key_of[c.states[-1].folder], {})
    if not all(np.isfinite(v) for v in minima.values()):
        res.bond_status = "no energy minimum along the bond within 0.6 Å"
        return
    if not h2.get("converged"):
        res.bond_status = "pending"
        return
    res.dft_dg_bond = minima["host+H"] - minima["host"] - 0.5 * h2["energy"] + c.correction
    res.bond_status = "ok"


def _geometry_forces(state, host_label: dict[str, Any], state_label: dict[str, Any]) -> tuple[float, float]:
    """(largest force on any atom of the host and host+H* single points, largest force on an H of the
    host+H* one), eV/Å; nan where a point has no forces."""
    from screening.bench_model import largest_force

    fmax = [largest_force(lab.get("forces")) for lab in (host_label, state_label)]
    fmax = [f for f in fmax if np.isfinite(f)]
    h_force = float("nan") if state is None else largest_force(state_label.get("forces"), state.numbers)
    return (max(fmax) if fmax else float("nan")), h_force


def _mm_force(atoms, forces) -> float:
    """The engine's force along the metal–metal axis (eV/Å, :func:`screening.mm_bond.bond_force`; negative:
    the pair wants to be closer) of a labelled structure; nan without forces or a metal pair."""
    from screening.mm_bond import bond_force, metal_pair_indices

    if forces is None or atoms is None:
        return float("nan")
    try:
        i, j = metal_pair_indices(atoms)
    except ValueError:
        return float("nan")
    return bond_force(atoms, forces, i, j)


# |DFT force along the M–M axis| (eV/Å) above which a validation line says the model's pair geometry is off:
# at the model-relaxed geometries of the held-out hosts DFT puts 3.7 (host) and 2.7 (H*) eV/Å on average
# there, SevenNet-0 0.3 (docs/dft.md, thirteenth measurement)
MM_FORCE_NOTE = 2.0


def write_back(
    db_path: str | os.PathLike,
    results: Sequence[ValidationResult],
    engine: str,
    settings: str,
    relax: bool,
    labels_db: str | os.PathLike,
) -> None:
    """Add the ``dft_*`` key-value pairs to each ΔG row, in one transaction under the store's lock.

    A failed validation removes a stale ``dft_dg``/``dft_de`` of an earlier run of the same row."""
    from screening.store import Store

    date = time.strftime("%Y-%m-%d %H:%M:%S")
    with Store(db_path) as st, st.db as db:
        for r in results:
            kv: dict[str, Any] = {
                "dft_engine": engine,
                "dft_settings": settings,
                "dft_relax": bool(relax),
                "dft_status": r.status,
                "dft_site": r.site,
                "dft_wall_s": float(r.wall_s),
                "dft_date": date,
                "dft_labels": str(labels_db),
            }
            stale: list[str] = []  # keys of an earlier validation that this one no longer supports
            for key, v in (
                ("dft_mm_force_host", r.mm_force_host),
                ("dft_mm_force", r.mm_force),
                ("dft_fmax", r.dft_fmax),
                ("dft_h_force", r.dft_h_force),
            ):
                if np.isfinite(v):
                    kv[key] = float(v)
                elif key in ("dft_fmax", "dft_h_force"):
                    stale.append(key)
            if r.bond_status not in ("", "pending"):  # a bond line was asked for and has its answer
                kv["dft_bond_status"] = r.bond_status
                bond = {"dft_dg_bond": r.dft_dg_bond, "dft_mm_k_host": r.mm_k_host, "dft_mm_k": r.mm_k}
                kv.update({k: float(v) for k, v in bond.items() if np.isfinite(v)})
                stale += [k for k, v in bond.items() if not np.isfinite(v)]
            if np.isfinite(r.dft_dg):
                kv.update(dft_dg=float(r.dft_dg), dft_de=float(r.dft_de))
            else:
                stale += ["dft_dg", "dft_de"]
            if np.isfinite(r.dft_dg_host):
                kv.update(
                    dft_dg_host=float(r.dft_dg_host),
                    dft_site_host=r.dft_site_host,
                    dft_host_classes=r.dft_host_classes,
                )
            else:
                stale += ["dft_dg_host", "dft_site_host", "dft_host_classes"]
            present = db.get(id=r.dg_row_id).key_value_pairs if stale else {}
            db.update(r.dg_row_id, delete_keys=[k for k in stale if k in present], **kv)
