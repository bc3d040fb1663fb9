"""SevenNet-0 labels of structures that the shipped network relaxed in a full screen, for the multi-fidelity
runs of `screen bench anchor` (issue 10): a replay set (forces replayed while fine-tuning on DFT, `--replay`)
and a pre-training validation set on other hosts (the forgetting check, `--pretrain-valid`). The hosts of
benchmarks/heldout_hosts.txt are left out of both. Labelled by `screen label`'s machinery (screening.labelling:
resumable, provenance in `OUT/<set>.db`), exported to `OUT/<set>.extxyz`.

A third set, ``references``: the formation-energy references of the screen (each metal-free pocket at the
network's minimum plus one rattle, each bulk metal at the network's lattice scale and 3 % either side),
exported as ``OUT/replay_refs.extxyz`` = the replay frames followed by these, for `--replay-energies
references` (their energies replayed, moved by the E0 re-fit).

    python benchmarks/make_replay_sets.py runs/screen4/results.db runs/replay_s12   # ~4 min on one core
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from screening import labelling as L
from screening.store import load_structures
from structures.common import read_host_list


def main(db: str, out: str, n_valid_hosts: int = 40, n_valid: int = 120, n_replay: int = 300) -> None:
    held = set(read_host_list("benchmarks/heldout_hosts.txt"))
    st = load_structures(db)
    st = st[~st.host.isin(held) & st.host.notna() & (st.host != "")]
    hosts = sorted(set(st.host))
    rng = np.random.default_rng(7)
    rng.shuffle(hosts)
    Path(out).mkdir(parents=True, exist_ok=True)
    sets = (
        ("pre_valid", set(hosts[:n_valid_hosts]), n_valid),
        ("replay", set(hosts[n_valid_hosts:]), n_replay),
    )
    labelled: dict[str, list] = {}
    for name, hs, n in sets:
        sub = st[st.host.isin(hs)]
        frames = []
        for i in np.sort(rng.choice(len(sub), n, replace=False)):
            r = sub.iloc[i]
            a = r["atoms"].copy()
            a.calc = None
            a.info = {"name": r["name"], "host": r["host"], "frame": "model_minimum"}
            frames.append(a)
        labelled[name] = _label(frames, out, name)
        print(f"{name}: {len(labelled[name])} frames of {len(hs)} hosts")
    refs = _label(reference_frames(db), out, "references")
    L.write_extxyz_atomic(Path(out) / "replay_refs.extxyz", labelled["replay"] + refs)
    print(f"references: {len(refs)} frames (pockets and bulk metals) -> replay_refs.extxyz")


def _label(frames: list, out: str, name: str) -> list:
    """SevenNet-0 labels of ``frames`` in ``OUT/<name>.db`` (resumable), exported to ``OUT/<name>.extxyz``."""
    db = Path(out) / f"{name}.db"
    L.label_structures(frames, "sevenn", None, str(db), progress=False)
    labelled = L.labelled_frames(db, "sevenn")
    L.write_extxyz_atomic(Path(out) / f"{name}.extxyz", labelled)
    return labelled


def reference_frames(db: str, rattle: float = 0.03, strain: float = 0.03) -> list:
    """The store's relaxed pockets (+ one rattled copy) and scanned bulk metals (at 1 - strain, 1, 1 + strain
    of the network's lattice), with ``ref_kind`` in their info (potentials.data.replay_frames keys on it)."""
    from ase.db import connect

    rng = np.random.default_rng(11)
    frames = []
    for row in connect(db).select(kind="reference"):
        if row.ref_kind not in ("pocket", "bulk"):
            continue
        a = row.toatoms()
        a.calc = None
        info = {"name": row.name, "ref_kind": row.ref_kind, "frame": row.ref_kind}
        variants = [(a, "minimum")]
        if row.ref_kind == "pocket":
            r = a.copy()
            r.positions += rng.normal(0.0, rattle, r.positions.shape)
            variants.append((r, f"rattle{rattle:g}"))
        else:
            for s in (1.0 - strain, 1.0 + strain):
                b = a.copy()
                b.set_cell(a.cell.array * s, scale_atoms=True)
                variants.append((b, f"scale{s:g}"))
        for v, tag in variants:
            v.info = {**info, "variant": tag}
            frames.append(v)
    if not frames:
        raise SystemExit(f"{db}: no pocket or bulk reference rows (run `screen run --db {db}` first)")
    return frames


if __name__ == "__main__":
    main(*sys.argv[1:3])
