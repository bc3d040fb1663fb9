"""``screen import OUTPUT... --db labels.db``: finished VASP / Quantum ESPRESSO outputs -> label rows.

Every ionic step that carries an energy and forces becomes one row (engine ``vasp`` or ``qe``) with
provenance (source file, ionic step, code version, cutoff and k-points when the file states them).
Re-importing a file is a no-op: each row's key is hash(structure) + hash(code, source settings).
"""

from __future__ import annotations

import argparse

FORMATS = {"vasprun": "vasp-xml", "outcar": "vasp-out", "qe": "espresso-out"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "outputs", nargs="+", metavar="OUTPUT", help="vasprun.xml, OUTCAR or pw.x output files"
    )
    parser.add_argument("--db", default="dft/labels.db", help="label database (default dft/labels.db)")
    parser.add_argument(
        "--format", default="auto", help="auto | vasprun | outcar | qe (default auto: from name/content)"
    )
    parser.add_argument(
        "--last-only", action="store_true", help="import only the last ionic step of each file"
    )
    parser.add_argument(
        "--name", default=None, help="structure name stored in each row (default: the file name)"
    )


def detect_format(path: str) -> str:
    """ASE format name of a VASP / QE output, from its name or its first 64 kB; InputError when unknown."""
    from pathlib import Path

    from structures.common import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"output file '{path}' does not exist; allowed: vasprun.xml, OUTCAR or pw.x output files"
        )
    name = p.name.lower()
    if name.endswith(".xml") and "vasprun" in name:
        return "vasp-xml"
    if name.startswith("outcar"):
        return "vasp-out"
    head = p.read_bytes()[:65536].decode(errors="replace")
    if "<modeling>" in head or "<generator>" in head and "vasp" in head.lower():
        return "vasp-xml"
    if "Program PWSCF" in head:
        return "espresso-out"
    if "vasp." in head and "POTCAR" in head:
        return "vasp-out"
    raise InputError(
        f"cannot tell the code of '{path}'; allowed: vasprun.xml, OUTCAR or pw.x output (or --format)"
    )


def source_settings(path: str, fmt: str) -> tuple[str, str, dict]:
    """(engine, version, settings) stated in the file: cutoff (eV) and k-points when found."""
    import re

    text = open(path, errors="replace").read()
    settings: dict = {"source_format": fmt}
    if fmt == "espresso-out":
        m = re.search(r"Program PWSCF\s+(v\.\S+)", text)
        version = f"qe {m.group(1) if m else '?'}"
        m = re.search(r"kinetic-energy cutoff\s*=\s*([\d.]+)\s*Ry", text)
        if m:
            settings["ecut_eV"] = round(float(m.group(1)) * 13.605693122994, 3)
        m = re.search(r"Exchange-correlation\s*=\s*(\S+)", text)
        if m:
            settings["xc"] = m.group(1)
        m = re.search(r"number of k points=\s*(\d+)", text)
        if m:
            settings["n_kpts"] = int(m.group(1))
        return "qe", version, settings
    if fmt == "vasp-xml":
        m = re.search(r'<i name="version"[^>]*>\s*([^<]+?)\s*</i>', text)
        version = f"vasp {m.group(1) if m else '?'}"
        m = re.search(r'<i name="ENCUT">\s*([\d.]+)', text)
        if m:
            settings["ecut_eV"] = float(m.group(1))
        m = re.search(r'<v type="int" name="divisions">\s*([\d ]+)</v>', text)
        if m:
            settings["kpts"] = [int(x) for x in m.group(1).split()]
        m = re.search(r'<i type="string" name="GGA">\s*(\S+?)\s*</i>', text)
        if m:
            settings["xc"] = m.group(1)
        return "vasp", version, settings
    m = re.search(r"vasp\.(\S+)", text)
    version = f"vasp {m.group(1) if m else '?'}"
    m = re.search(r"ENCUT\s*=\s*([\d.]+)", text)
    if m:
        settings["ecut_eV"] = float(m.group(1))
    return "vasp", version, settings


def import_outputs(
    paths: list[str], db_path: str, fmt: str = "auto", last_only: bool = False, name: str | None = None
) -> dict[str, int]:
    """Import every ionic step with energy and forces of each file; counts (files, steps, new, skipped)."""
    import hashlib
    import json
    import os
    from pathlib import Path

    import ase.db
    from ase.io import read

    from screening import labelling as L
    from structures.common import InputError

    if fmt != "auto" and fmt not in FORMATS:
        raise InputError(f"unknown --format '{fmt}'; allowed: auto, {', '.join(FORMATS)}")
    parsed = []
    for path in paths:  # parse everything first: a bad file aborts before anything is written
        f = detect_format(path) if fmt == "auto" else FORMATS[fmt]
        try:
            frames = read(path, index=":", format=f, do_not_split_by_at_sign=True)
        except Exception as exc:  # noqa: BLE001 - any parser failure is a user-facing input error
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            raise InputError(f"cannot parse '{path}' as {f} ({msg})") from exc
        frames = frames if isinstance(frames, list) else [frames]
        good = []
        for i, a in enumerate(frames):
            try:
                e, forces = a.get_potential_energy(), a.get_forces()
            except Exception:  # noqa: BLE001 - steps without results are skipped
                continue
            good.append((i, a, float(e), forces))
        if not good:
            raise InputError(
                f"'{path}' has no ionic step with both energy and forces; allowed: finished outputs"
            )
        if last_only:
            good = good[-1:]
        parsed.append((path, f, good))
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    have = L.done_keys(db_path)
    db = ase.db.connect(str(db_path))
    counts = {"files": len(parsed), "steps": 0, "new": 0, "skipped": 0}
    for path, f, good in parsed:
        engine, version, settings = source_settings(path, f)
        sh = hashlib.sha1(json.dumps({"engine": engine, **settings}, sort_keys=True).encode()).hexdigest()[
            :12
        ]
        for i, a, e, forces in good:
            counts["steps"] += 1
            key = f"{L.structure_hash(a)}-{sh}"
            if key in have:
                counts["skipped"] += 1
                continue
            have.add(key)
            res: dict = {
                "converged": True,
                "status": "ok",
                "energy": e,
                "forces": forces,
                "wall_s": 0.0,
                "attempts": [],
                "error": "",
            }
            try:
                res["stress"] = a.get_stress(voigt=False)
            except Exception:  # noqa: BLE001 - optional
                pass
            try:
                mm = a.get_magnetic_moments()
                res["magmoms"], res["magmom"] = mm, float(a.get_magnetic_moment())
            except Exception:  # noqa: BLE001 - optional
                pass
            rec = a.copy()
            rec.info.update(
                {
                    "name": name or os.path.basename(path),
                    "source": f,
                    "source_file": os.path.abspath(path),
                    "ionic_step": i,
                }
            )
            L.write_label_row(
                db,
                rec,
                key,
                engine,
                version,
                {"physics": settings, "source_file": os.path.abspath(path)},
                res,
            )
            counts["new"] += 1
    return counts


def run(args: argparse.Namespace) -> int:
    c = import_outputs(args.outputs, args.db, fmt=args.format, last_only=args.last_only, name=args.name)
    print(
        f"{c['files']} files, {c['steps']} ionic steps: {c['new']} new labels, {c['skipped']} already stored"
    )
    return 0
