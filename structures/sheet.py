"""Picture sheet of every motif: one top-view panel each, N and metals coloured."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .common import atomic_write_bytes
from .host import build_host, pocket_indices
from .motifs import catalogue

COLOURS = {"C": "#555555", "N": "#2f6fd6", "H": "#ffffff"}
METAL_COLOUR = "#e08a1e"


def draw_motif_sheet(path: str | Path, metal: str = "Fe", window: float = 5.2) -> Path:
    """Draw all motifs (k = 0..6) of ``metal`` in the pocket; PNG (or SVG by suffix), atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    motifs = catalogue()
    ncol = 6
    nrow = int(np.ceil(len(motifs) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.3 * ncol, 2.1 * nrow))
    for ax, motif in zip(axes.flat, motifs):
        atoms = build_host(metal, motif)
        m1, m2, shell = pocket_indices(atoms)
        centre = 0.5 * (atoms.positions[m1] + atoms.positions[m2])
        xy = atoms.positions[:, :2] - centre[:2]
        near = np.all(np.abs(xy) < window, axis=1)
        # bonds between shown framework atoms and metal-first shell bonds
        for i in np.where(near)[0]:
            for j in np.where(near)[0]:
                if j <= i:
                    continue
                d = np.linalg.norm(xy[i] - xy[j])
                metal_pair = i in (m1, m2) or j in (m1, m2)
                if (not metal_pair and d < 1.6) or (
                    metal_pair and d < 2.3 and not (i in (m1, m2) and j in (m1, m2))
                ):
                    ax.plot(*zip(xy[i], xy[j]), color="#999999", lw=1, zorder=1)
        for i in np.where(near)[0]:
            sym = atoms[i].symbol
            is_metal = i in (m1, m2)
            ax.scatter(
                *xy[i],
                s=170 if is_metal else 70,
                c=METAL_COLOUR if is_metal else COLOURS.get(sym, "k"),
                edgecolors="k",
                linewidths=0.6,
                zorder=3,
            )
        for s, idx in enumerate(shell):
            ax.annotate(
                str(s), xy[idx], xytext=(4, 4), textcoords="offset points", fontsize=6, color="#b00000"
            )
        ax.set_title(f"{motif.name}  (x{motif.multiplicity})", fontsize=9)
        ax.set_xlim(-window, window)
        ax.set_ylim(-window * 0.75, window * 0.75)
        ax.set_aspect("equal")
        ax.axis("off")
    for ax in list(axes.flat)[len(motifs) :]:
        ax.axis("off")
    fig.suptitle(
        f"{metal}2 pocket motifs: grey C, blue N, orange metal; red numbers = first-shell site index",
        fontsize=10,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    path = Path(path)
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
