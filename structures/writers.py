"""Write enumerated structures atomically: a new folder appears complete or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ase import Atoms

from . import keys as K
from .common import InputError
from .enumerate import iter_structures
from .motifs import Motif

INFO_KEYS = (
    K.NAME,
    K.HOST,
    K.METAL,
    K.METAL2,
    K.MOTIF,
    K.N_N,
    K.N_SITES,
    K.SITE,
    K.SUPERCELL,
    K.POCKET_INDICES,
    K.ADSORBATE_INDEX,
)


def _clean_info(atoms: Atoms) -> Atoms:
    """extxyz cannot store None: the bare host's site is written as the empty string."""
    if atoms.info.get(K.SITE) is None:
        atoms.info[K.SITE] = ""
    return atoms


def write_structures(
    out: str | os.PathLike,
    metals: Sequence[str],
    motifs: Sequence[Motif],
    fmt: str = "extxyz",
    pairs: str = "homo",
    with_h: bool = True,
    supercell: str = "2r7",
    force: bool = False,
    total: int | None = None,
) -> Path:
    """Write every structure to ``out`` (a folder). Builds in a temporary sibling folder, then renames.

    extxyz -> ``out/structures.extxyz``; db -> ``out/structures.db`` (ASE SQLite, info keys as key-value
    pairs); vasp -> ``out/<name>/POSCAR`` (names with '@' and '+' kept).
    """
    from ase.io import write
    from tqdm import tqdm

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out '{out}' exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(f"--out '{out}' is not empty; choose a new folder or pass --force")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp"))
    try:
        it = tqdm(
            iter_structures(metals, motifs, pairs, with_h, supercell),
            total=total,
            unit="struct",
            desc="structures",
            disable=None,
        )
        if fmt == "extxyz":
            target = tmp / "structures.extxyz"
            with open(target, "w") as fh:
                for atoms in it:
                    write(fh, _clean_info(atoms), format="extxyz")
        elif fmt == "db":
            import ase.db

            with ase.db.connect(tmp / "structures.db", append=False) as db:
                for atoms in it:
                    kv = {k: atoms.info[k] for k in INFO_KEYS if atoms.info.get(k) is not None}
                    db.write(atoms, key_value_pairs=kv)
        elif fmt == "vasp":
            for atoms in it:
                d = tmp / atoms.info[K.NAME]
                d.mkdir()
                write(d / "POSCAR", atoms, format="vasp", direct=True, sort=False)
        else:
            raise InputError(f"unknown format {fmt!r}; allowed: extxyz, db, vasp")
        out.mkdir(exist_ok=True)
        for item in tmp.iterdir():
            dest = out / item.name
            if dest.exists():
                shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
            os.replace(item, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
