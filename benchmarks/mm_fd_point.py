"""Write a validated host with its metal pair moved along the M–M axis, for a DFT finite difference of the
bond (docs/dft.md, thirteenth measurement): each metal moves by dd/2 (Å; dd < 0 brings them closer), every
other atom stays where ``screen validate`` labelled it. Label the file with the same settings, e.g.

    python benchmarks/mm_fd_point.py Ru2@2Nf -0.1 runs/fd_check/Ru2-2Nf_mm-0.10.extxyz
    screen label --engine gpaw --preset pw500 --in runs/fd_check/Ru2-2Nf_mm-0.10.extxyz \
      --db dft/mm_check.db --log-dir runs/fd_check/logs

and ``benchmarks/mm_bond_bias.py --fd-db dft/mm_check.db`` reads the stiffness from the pair of labels.

Usage: python benchmarks/mm_fd_point.py HOST DD OUT [labels.db]
"""

from __future__ import annotations

import sys

import ase.io

from screening.bench_model import dft_triples
from screening.mm_bond import metal_pair_indices, stretch_pair


def main(host: str, dd: float, out: str, labels: str = "dft/labels.db") -> None:
    hosts = {
        t["host"]: t["atoms"][0]
        for t in dft_triples(labels, "8105ed16eae5", max_h_force=float("inf"))
        if t["geometry"] == "validate"
    }
    if host not in hosts:
        sys.exit(f"mm_fd_point: no validated host {host!r} in {labels}; allowed: {', '.join(sorted(hosts))}")
    i, j = metal_pair_indices(hosts[host])
    a = stretch_pair(hosts[host], i, j, dd)
    a.info = {"name": f"{host}/mm{dd:+.2f}", "host": host}
    ase.io.write(out, a)
    print(
        f"{host}: M–M {hosts[host].get_distance(i, j, mic=True):.3f} -> {a.get_distance(i, j, mic=True):.3f} Å -> {out}"
    )


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__.strip().splitlines()[-1])
    main(sys.argv[1], float(sys.argv[2]), *sys.argv[3:5])
