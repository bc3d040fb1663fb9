"""SevenNet-0 labels of structures that the shipped network relaxed in a full screen, for the multi-fidelity
runs of `screen bench anchor` (issue 10): a replay set (forces replayed while fine-tuning on DFT, `--replay`)
and a pre-training validation set on other hosts (the forgetting check, `--pretrain-valid`). The hosts of
benchmarks/heldout_hosts.txt are left out of both. Labelled by `screen label`'s machinery (screening.labelling:
resumable, provenance in `OUT/<set>.db`), exported to `OUT/<set>.extxyz`.

    python benchmarks/make_replay_sets.py runs/screen4/results.db runs/replay_s12   # ~3 min on one core
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
    for name, hs, n in sets:
        sub = st[st.host.isin(hs)]
        frames = []
        for i in np.sort(rng.choice(len(sub), n, replace=False)):
            r = sub.iloc[i]
            a = r["atoms"].copy()
            a.calc = None
            a.info = {"name": r["name"], "host": r["host"], "frame": "model_minimum"}
            frames.append(a)
        labels = str(Path(out) / f"{name}.db")
        L.label_structures(frames, "sevenn", None, labels, progress=False)
        k = L.export_training_set(labels, Path(out) / f"{name}.extxyz", engine="sevenn")
        print(f"{name}: {k} frames of {len(hs)} hosts")


if __name__ == "__main__":
    main(*sys.argv[1:3])
