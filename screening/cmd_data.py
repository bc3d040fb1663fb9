"""``screen data``: a labelled training set for TM2@N-graphene from the structure generator.

Frames per generated structure (hosts and H* states): the structure itself, ``--n-rattle`` Gaussian
rattles (σ = ``--rattle`` Å), two biaxial in-plane strains (±``--strain``), and ``--relax-frames`` frames of a
short FIRE relaxation with the reference calculator (the relaxation's own energies and forces are the
labels). ``--h-scan`` adds copies of each H* state with the H moved along the surface normal (the
approach / desorption path the screen's relaxations visit), and unless ``--no-references`` the references
that ΔGH* and the formation energy need are labelled too: H2 at several bond lengths, the metal-free pocket of
each motif (with rattles) and each bulk metal on a lattice scan. Reference frames always go to the training
side of the host split. Labels go through ``screening.labelling`` (resumable store next to the output); every written frame
carries its reference engine and settings in ``info``. ``--reference FILE.extxyz|FILE.db`` takes labelled
frames from a file instead.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metals", default="Fe,Co,Ni,Cu", help="all or a comma list of metals (default Fe,Co,Ni,Cu)"
    )
    parser.add_argument(
        "--motifs", default="6Na", help="all, a comma list (e.g. 6Na,4Nb) or a motif file (default 6Na)"
    )
    parser.add_argument("--pairs", default="homo", help="homo or hetero metal pairs (default homo)")
    parser.add_argument(
        "--supercell", default="4x4", help="graphene supercell preset: 4x4 or 2r7 (default 4x4)"
    )
    parser.add_argument("--no-h", action="store_true", help="hosts only, no H* states")
    parser.add_argument("--sites", default=None, help="H* site labels to keep (default: all distinct sites)")
    parser.add_argument(
        "--reference",
        default="sevenn",
        help="sevenn | emt | gpaw | ase:<module>:<Class> | labelled FILE.extxyz or FILE.db (default sevenn)",
    )
    parser.add_argument("--rattle", type=float, default=0.05, help="rattle amplitude σ, Å (default 0.05)")
    parser.add_argument("--n-rattle", type=int, default=2, help="rattled copies per structure (default 2)")
    parser.add_argument(
        "--strain", type=float, default=0.02, help="biaxial in-plane strain ± (default 0.02; 0 = none)"
    )
    parser.add_argument(
        "--relax-frames", type=int, default=5, help="FIRE steps recorded per structure (default 5)"
    )
    parser.add_argument(
        "--h-scan",
        default="-0.3,0.7,1.6",
        help="H* copies with H moved along the surface normal by these offsets, Å ('' = none; "
        "default -0.3,0.7,1.6)",
    )
    parser.add_argument(
        "--no-references",
        action="store_true",
        help="no H2 / metal-free pocket / bulk-metal reference frames",
    )
    parser.add_argument("--out", default="train.extxyz", help="output extxyz (default train.extxyz)")
    parser.add_argument(
        "--valid-fraction", type=float, default=0.0, help="fraction of hosts held out (default 0)"
    )
    parser.add_argument(
        "--valid-out", default=None, help="validation extxyz (default: <out stem>.valid.extxyz)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of rattles and split (default 0)")
    parser.add_argument("--db", default=None, help="label store (default: <out stem>.labels.db)")
    parser.add_argument(
        "--workers", type=int, default=1, help="labelling processes, one core each (default 1)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from screening.cmd_label import add_settings_arguments

    add_settings_arguments(parser)


def rattled(atoms, sigma: float, n: int, seed: int) -> list:
    """``n`` copies with Gaussian displacements of σ = ``sigma`` Å (seeded per copy)."""
    import numpy as np

    out = []
    for i in range(n):
        a = atoms.copy()
        rng = np.random.default_rng([seed, i, len(atoms)])
        a.positions = a.positions + rng.normal(scale=sigma, size=a.positions.shape)
        a.info.update(frame="rattle", rattle=float(sigma), parent=atoms.info.get("name", ""))
        out.append(a)
    return out


def strained(atoms, eps: float) -> list:
    """Biaxial in-plane strains +eps and -eps (cell rows a and b scaled, c kept, atoms follow)."""
    out = []
    for e in (eps, -eps):
        a = atoms.copy()
        cell = a.cell.array.copy()
        cell[:2] *= 1.0 + e
        a.set_cell(cell, scale_atoms=True)
        a.info.update(frame="strain", strain=float(e), parent=atoms.info.get("name", ""))
        out.append(a)
    return out


#: H2 bond lengths (Å) of the reference frames; ASE's H2 is 0.74 Å
H2_BONDS = (0.62, 0.68, 0.74, 0.80, 0.88, 1.0)
#: lattice scalings of the bulk-metal reference frames (the screen's bulk scan spans 0.94-1.06)
BULK_SCALES = (0.94, 0.97, 1.0, 1.03, 1.06)
#: ``frame`` values of reference frames (kept on the training side of the host split)
REFERENCE_FRAMES = ("h2", "pocket", "bulk")


def parse_offsets(text: str) -> list[float]:
    """'-0.3,0.7' -> [-0.3, 0.7] (Å); InputError naming a bad value."""
    from structures.common import InputError

    out = []
    for tok in (t.strip() for t in str(text).split(",")):
        if not tok:
            continue
        try:
            v = float(tok)
        except ValueError:
            raise InputError(f"--h-scan offset '{tok}' is not a number; allowed: comma list of Å") from None
        if not -1.0 <= v <= 4.0:
            raise InputError(f"--h-scan offset {v} is not allowed; allowed: -1.0 <= offset <= 4.0 Å")
        out.append(v)
    return out


def h_scanned(atoms, offsets) -> list:
    """Copies of an H* state with its H moved by each offset (Å) along +z (the sheet normal)."""
    from structures import keys as K

    idx = atoms.info.get(K.ADSORBATE_INDEX)
    if idx is None:
        return []
    out = []
    for dz in offsets:
        a = atoms.copy()
        a.positions[int(idx), 2] += dz
        a.info.update(frame="h_scan", h_offset=float(dz), parent=atoms.info.get("name", ""))
        out.append(a)
    return out


def reference_frames(base: list, metals: list[str], rattle: float, n_rattle: int, seed: int) -> list:
    """H2 at ``H2_BONDS``, the metal-free pocket of each motif/supercell in ``base`` (+ rattles), and each
    bulk metal at ``BULK_SCALES``: the structures ΔGH* and the formation energy are computed from."""
    from screening.dgh import h2_molecule
    from screening.stability import bulk_reference, pocket_reference
    from structures import keys as K

    out = []
    for d in H2_BONDS:
        h2 = h2_molecule()
        c = h2.positions.mean(axis=0)
        h2.positions = c + (h2.positions - c) * (d / h2.get_distance(0, 1))
        h2.info.update({K.NAME: f"H2@{d:.2f}", "frame": "h2", "ref_kind": "h2"})
        out.append(h2)
    seen: set[str] = set()
    for a in base:
        if a.info.get(K.SITE) not in (None, "", "None"):
            continue
        key = f"{a.info[K.MOTIF]}/{a.info.get(K.SUPERCELL)}"
        if key in seen:
            continue
        seen.add(key)
        p = pocket_reference(a)
        p.info["frame"] = "pocket"
        out.append(p)
        for r in rattled(p, rattle, n_rattle, seed + len(seen)) if rattle > 0 else []:
            r.info.update({K.NAME: p.info[K.NAME], "frame": "pocket"})
            out.append(r)
    for m in metals:
        b0 = bulk_reference(m)
        for s in BULK_SCALES:
            b = b0.copy()
            b.set_cell(b0.cell.array * s, scale_atoms=True)
            b.info.update({K.NAME: f"bulk@{m}x{s:.2f}", "frame": "bulk"})
            out.append(b)
    return out


def relax_frames(atoms, engine, settings, n_steps: int) -> list[tuple[Any, dict[str, Any]]]:
    """Frames 1..n_steps of a FIRE relaxation with the reference calculator, each with its energy and forces.

    Returns [(atoms, result dict as compute_label returns)]; stops early when fmax < 0.05 eV/Å.
    """
    import time

    import numpy as np
    from ase.optimize import FIRE

    work = atoms.copy()
    attempt = engine.attempts(settings)[0]
    work.calc = engine.make(work, settings, attempt, None)  # SCF engines set the initial moments here
    frames: list[tuple[Any, dict[str, Any]]] = []
    t = [time.perf_counter()]

    def grab() -> None:
        if opt.nsteps == 0:
            return
        a = atoms.copy()
        a.positions = work.positions.copy()
        a.info.update(frame="relax", relax_step=int(opt.nsteps), parent=atoms.info.get("name", ""))
        now = time.perf_counter()
        res = {
            "converged": True,
            "status": "ok",
            "energy": float(work.get_potential_energy()),
            "forces": np.asarray(work.get_forces(), dtype=float),
            "wall_s": now - t[0],
            "attempts": [attempt],
            "error": "",
        }
        t[0] = now
        frames.append((a, res))

    opt = FIRE(work, logfile=None)
    opt.attach(grab, interval=1)
    opt.run(fmax=0.05, steps=n_steps)
    return frames


def _frames_from_file(path: str, metals: list[str] | None, motifs: list[str] | None) -> list:
    from pathlib import Path

    from screening import labelling as L
    from structures import keys as K
    from structures.common import InputError

    p = Path(path)
    if p.suffix == ".db":
        frames = list(L.iter_labels(p, converged_only=True))
    else:
        frames = []
        for a in L.read_structures([path]):
            try:
                a.get_potential_energy(), a.get_forces()
            except Exception:  # noqa: BLE001 - frames without labels are not reference data
                continue
            a.info.setdefault("reference", f"file:{p.name}")
            frames.append(a)
    if not frames:
        raise InputError(
            f"reference file '{path}' has no frames with energy and forces; allowed: labelled extxyz/db"
        )
    seen: set[str] = set()
    unique = []
    for a in frames:  # a frame labelled once but written by several runs (shared references) counts once
        key = a.info.get("label_key")
        if key is None or key not in seen:
            unique.append(a)
            if key is not None:
                seen.add(key)
    keep = [
        a
        for a in unique
        if (metals is None or a.info.get(K.METAL, metals[0]) in metals)
        and (motifs is None or a.info.get(K.MOTIF, motifs[0]) in motifs)
    ]
    return keep


def _split(frames: list, fraction: float, seed: int) -> tuple[list, list]:
    """Hold out whole hosts (all frames of a host on one side), ``fraction`` of the hosts at random."""
    import numpy as np

    from structures import keys as K

    refs = [a for a in frames if a.info.get("frame") in REFERENCE_FRAMES]
    frames = [a for a in frames if a.info.get("frame") not in REFERENCE_FRAMES]
    if fraction <= 0 or not frames:
        return refs + frames, []
    groups = sorted({str(a.info.get(K.HOST) or a.info.get(K.NAME) or i) for i, a in enumerate(frames)})
    rng = np.random.default_rng(seed)
    n_valid = max(1, int(round(fraction * len(groups)))) if len(groups) > 1 else 0
    valid = set(rng.permutation(groups)[:n_valid].tolist())
    tr, va = list(refs), []
    for i, a in enumerate(frames):
        (va if str(a.info.get(K.HOST) or a.info.get(K.NAME) or i) in valid else tr).append(a)
    return tr, va


def build_dataset(args: argparse.Namespace) -> dict[str, Any]:
    """Generate, label (resumable) and split; returns counts and output paths."""
    from pathlib import Path

    import ase.db

    from screening import labelling as L
    from structures.common import InputError
    from structures.metals import resolve_metals
    from structures.motifs import resolve_motifs

    for name, v, lo in (
        ("--rattle", args.rattle, 0.0),
        ("--n-rattle", args.n_rattle, 0),
        ("--strain", args.strain, 0.0),
        ("--relax-frames", args.relax_frames, 0),
        ("--valid-fraction", args.valid_fraction, 0.0),
    ):
        if v < lo:
            raise InputError(f"{name} {v} is not allowed; allowed: >= {lo}")
    if args.valid_fraction >= 1.0:
        raise InputError(f"--valid-fraction {args.valid_fraction} is not allowed; allowed: 0 <= f < 1")
    if args.strain >= 0.5:
        raise InputError(f"--strain {args.strain} is not allowed; allowed: 0 <= strain < 0.5")
    metals = resolve_metals(args.metals)
    motifs = resolve_motifs(args.motifs)
    out = Path(args.out)
    valid_out = Path(args.valid_out) if args.valid_out else out.with_name(out.stem + ".valid.extxyz")
    ref = args.reference
    is_file = not ref.startswith("ase:") and (
        Path(ref).suffix in (".extxyz", ".xyz", ".db") or Path(ref).exists()
    )
    if is_file:
        frames = _frames_from_file(ref, metals, [m.name for m in motifs])
        stats = {"generated": len(frames), "labelled_now": 0, "flagged": 0}
    else:
        engine = L.get_engine(ref)
        settings = L.settings_from_args(args)
        sites = [s.strip() for s in args.sites.split(",") if s.strip()] if args.sites else None
        base = L.build_queue(
            metals, motifs, pairs=args.pairs, supercell=args.supercell, with_h=not args.no_h, sites=sites
        )
        offsets = parse_offsets(args.h_scan)
        engine.check(base)
        todo = []
        for i, a in enumerate(base):
            a.info.setdefault("frame", "base")
            todo.append(a)
            todo += rattled(a, args.rattle, args.n_rattle, args.seed + i) if args.rattle > 0 else []
            todo += strained(a, args.strain) if args.strain > 0 else []
            todo += h_scanned(a, offsets)
        if not args.no_references:
            refs = reference_frames(base, metals, args.rattle, args.n_rattle, args.seed)
            engine.check(refs)
            todo += refs
        db_path = Path(args.db) if args.db else out.with_name(out.stem + ".labels.db")
        rep = L.label_structures(
            todo, engine, settings, db_path, workers=args.workers, progress=not args.no_progress
        )
        keys = list(rep.keys)
        if args.relax_frames > 0:
            db = ase.db.connect(str(db_path))
            physics = {**settings.to_dict(), "physics": engine.physics(settings)}
            for a in base:
                start = L.label_key(a, engine, settings)
                done = [r.label_key for r in db.select(relax_of=start)]
                if done:
                    keys += done
                    continue
                try:
                    got = relax_frames(a, engine, settings, args.relax_frames)
                except (KeyboardInterrupt, InputError):
                    raise
                except Exception as exc:  # noqa: BLE001 - a failed relaxation loses its frames, not the run
                    why = f"{type(exc).__name__}: {exc}"
                    print(f"relaxation of {a.info.get('name')} failed ({why}); no frames kept")
                    continue
                for fa, res in got:  # the whole relaxation is written at once: a kill redoes it, never half
                    fa.info["relax_of"] = start
                    k = L.label_key(fa, engine, settings)
                    L.write_label_row(db, fa, k, engine.name, engine.version(), physics, res)
                    keys.append(k)
        by_key = {
            a.info["label_key"]: a for a in L.iter_labels(db_path, engine=engine.name, converged_only=True)
        }
        frames, seen = [], set()
        for k in keys:
            if k in by_key and k not in seen:
                seen.add(k)
                frames.append(by_key[k])
        stats = {
            "generated": len(todo),
            "labelled_now": rep.labelled,
            "flagged": len(set(keys)) - len(frames),
        }
    train, valid = _split(frames, args.valid_fraction, args.seed)
    if not train:
        raise InputError("no labelled frames to write; allowed: a selection whose labels converge")
    L.write_extxyz_atomic(out, train)
    if valid:
        L.write_extxyz_atomic(valid_out, valid)
    return {
        **stats,
        "train": len(train),
        "valid": len(valid),
        "out": str(out),
        "valid_out": str(valid_out) if valid else None,
    }


def run(args: argparse.Namespace) -> int:
    r = build_dataset(args)
    msg = f"{r['train']} training frames -> {r['out']}"
    if r["valid"]:
        msg += f", {r['valid']} validation frames -> {r['valid_out']}"
    print(f"{msg} ({r['labelled_now']} labelled now, {r['flagged']} flagged and left out)")
    return 0
