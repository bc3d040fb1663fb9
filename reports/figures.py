"""Report figures (matplotlib, headless): each is written as PNG and SVG, atomically.

All take a ranked table (:func:`reports.tables.rank`); energies in eV. Figures:

- ``ranked``: best candidates by |ΔGH*| with 1σ (thick) and 2σ (thin) bars, DFT values when present;
- ``heatmap_dg`` / ``heatmap_sigma``: metal pairs x motifs of ΔGH* (diverging, centred at 0) and of σ;
- ``volcano``: Nørskov's kinetic HER volcano with each candidate and its 1σ/2σ bars along ΔGH*;
- ``trend_metal`` / ``trend_motif``: ΔGH* per metal pair and per motif (points ± 1σ, median bar);
- ``parity`` and ``calibration`` (only with DFT values): model vs DFT with error bars; |error| vs σ and the
  coverage of central σ-intervals against the Gaussian expectation.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from structures.common import atomic_write_bytes

from .tables import ReportConfig, log_i0

STYLE: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "svg.fonttype": "none",
    "figure.constrained_layout.use": True,
}
WINDOW_COLOR = "#2ca02c"
DFT_COLOR = "#d62728"
MODEL_COLOR = "#1f77b4"
MAX_PIXELS = 12000  # largest PNG side; dpi is lowered for very tall heatmaps


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: Path, name: str, dpi: int) -> dict[str, Path]:
    """Write ``name.png`` and ``name.svg`` under ``out`` atomically; closes the figure."""
    plt = _plt()
    w, h = fig.get_size_inches()
    dpi = int(min(dpi, MAX_PIXELS / max(w, h)))
    paths = {}
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=dpi, metadata={"Date": None} if ext == "svg" else None)
        paths[ext] = out / f"{name}.{ext}"
        atomic_write_bytes(paths[ext], buf.getvalue())
    plt.close(fig)
    return paths


def _has_dft(df) -> bool:
    """Any DFT ΔGH*, at the model's site (``dft_dg``) or at the host's lowest labelled site (``dft_dg_host``)."""
    return bool(np.isfinite(_host_value(df)).any())


def _host_value(df) -> np.ndarray:
    """DFT ΔGH* of each row's host for rankings: its lowest labelled site where written (``dft_dg_host``),
    else the model's site (``dft_dg``), else NaN."""
    same = df["dft_dg"].to_numpy(float) if "dft_dg" in df else np.full(len(df), np.nan)
    host = _host_dft(df)
    value = np.where(np.isfinite(host), host, same)
    # a geometry failure at the model's site says nothing about the host's DFT ΔGH*
    site = df["dft_site_host"].astype(str).to_numpy() if "dft_site_host" in df else np.full(len(df), "")
    best = df["best_site"].astype(str).to_numpy() if "best_site" in df else np.full(len(df), "")
    at_model_site = ~np.isfinite(host) | (site == best)
    return np.where(geometry_failures(df) & at_model_site, np.nan, value)


def _state_label(row) -> str:
    site = row.get("best_site") or ""
    return f"{row['host']}  ({site})" if site else str(row["host"])


def motif_order(df) -> list[str]:
    """Motifs sorted by number of N, then name."""
    m = df[["motif", "n_N"]].drop_duplicates()
    m = m.assign(n=m["n_N"].astype(float).fillna(-1)).sort_values(["n", "motif"])
    return list(dict.fromkeys(m["motif"]))


def pair_order(df) -> list[str]:
    """Metal pairs in catalogue order of the first, then the second metal (unknown symbols last)."""
    from structures.metals import METALS

    pos = {m: i for i, m in enumerate(METALS)}
    pairs = df[["pair", "metal", "metal2"]].drop_duplicates("pair")
    key = [
        (pos.get(a, 99), pos.get(b if b else a, 99), p)
        for p, a, b in zip(pairs["pair"], pairs["metal"], pairs["metal2"])
    ]
    return [k[2] for k in sorted(key)]


# ----------------------------------------------------------------------------------------------------------
def ranked(df, out: Path, config: ReportConfig) -> dict[str, Path]:
    """Top ``config.max_ranked`` candidates by |ΔGH*|, best at the top."""
    plt = _plt()
    d = df[np.isfinite(df["dg"].to_numpy(float))].head(config.max_ranked)
    n = len(d)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.28 * max(n, 3)))
        y = np.arange(n)[::-1]
        dg, s = d["dg"].to_numpy(float), np.nan_to_num(d["dg_std"].to_numpy(float))
        ax.axvspan(
            -config.window,
            config.window,
            color=WINDOW_COLOR,
            alpha=0.12,
            lw=0,
            label=f"|ΔGH*| < {config.window:g} eV",
        )
        ax.axvline(0.0, color="0.3", lw=0.8)
        ax.hlines(y, dg - 2 * s, dg + 2 * s, color=MODEL_COLOR, lw=1.0, alpha=0.6, label="model ± 2σ")
        ax.hlines(y, dg - s, dg + s, color=MODEL_COLOR, lw=3.5, label="model ± 1σ")
        ax.plot(dg, y, "o", color="white", mec=MODEL_COLOR, mew=1.5, ms=5, zorder=3)
        if _has_dft(d):
            ok = np.isfinite(_host_value(d))
            ax.plot(
                _host_value(d)[ok],
                y[ok],
                "x",
                color=DFT_COLOR,
                ms=7,
                mew=2,
                zorder=4,
                label="DFT",
            )
        ax.set_yticks(y, [_state_label(r) for _, r in d.iterrows()], fontsize=8)
        ax.set_ylim(-0.8, n - 0.2)
        ax.set_xlabel("ΔGH* (eV)")
        total = int(np.isfinite(df["dg"].to_numpy(float)).sum())
        fig.suptitle(f"Candidates ranked by |ΔGH*| (best {n} of {total})")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, frameon=False)
        ax.grid(axis="y", visible=False)
        return save(fig, out, "ranked", config.dpi)


def _heatmap(
    df, out: Path, config: ReportConfig, column: str, name: str, title: str, cbar: str, diverging: bool
) -> dict[str, Path]:
    plt = _plt()
    from matplotlib.colors import TwoSlopeNorm

    pairs, motifs = pair_order(df), motif_order(df)
    grid = df.pivot_table(index="pair", columns="motif", values=column, aggfunc="first").reindex(
        index=pairs, columns=motifs
    )
    z = grid.to_numpy(float)
    with plt.rc_context(STYLE | {"axes.grid": False}):
        fig, ax = plt.subplots(
            figsize=(max(5.0, 1.8 + 0.48 * len(motifs)), max(3.0, 1.3 + 0.32 * len(pairs)))
        )
        finite = z[np.isfinite(z)]
        if diverging:
            lim = float(np.nanmax(np.abs(finite))) if finite.size else 1.0
            lim = max(lim, 1e-3)
            im = ax.imshow(z, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim), aspect="auto")
        else:
            hi = float(np.nanmax(finite)) if finite.size else 1.0
            im = ax.imshow(z, cmap="viridis", vmin=0.0, vmax=max(hi, 1e-3), aspect="auto")
        ax.set_xticks(np.arange(len(motifs)), motifs, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(np.arange(len(pairs)), pairs, fontsize=8)
        ax.set_xlabel("motif (sorted by number of N)")
        ax.set_ylabel("metal pair")
        if z.size <= config.annotate_max:
            norm = im.norm
            for (i, j), v in np.ndenumerate(z):
                if np.isfinite(v):
                    dark = im.cmap(norm(v))[:3]
                    lum = 0.299 * dark[0] + 0.587 * dark[1] + 0.114 * dark[2]
                    ax.text(
                        j,
                        i,
                        f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if lum > 0.5 else "white",
                    )
        missing = ~np.isfinite(z)
        if missing.any():
            ax.imshow(np.where(missing, 1.0, np.nan), cmap="Greys", vmin=0, vmax=4, aspect="auto")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, label=cbar, shrink=0.9)
        return save(fig, out, name, config.dpi)


def heatmaps(df, out: Path, config: ReportConfig) -> dict[str, dict[str, Path]]:
    """ΔGH* (diverging around 0) and σ (sequential) over metal pairs x motifs; grey = no result."""
    return {
        "heatmap_dg": _heatmap(
            df, out, config, "dg", "heatmap_dg", "ΔGH* by metal pair and motif", "ΔGH* (eV)", True
        ),
        "heatmap_sigma": _heatmap(
            df, out, config, "dg_std", "heatmap_sigma", "σ(ΔGH*) by metal pair and motif", "σ (eV)", False
        ),
    }


def volcano(df, out: Path, config: ReportConfig) -> dict[str, Path]:
    """log10(i0 / e k0) vs ΔGH*: both branches of Nørskov's model; candidates on the curve, ±σ/±2σ bars."""
    plt = _plt()
    d = df[np.isfinite(df["dg"].to_numpy(float))]
    dg, s = d["dg"].to_numpy(float), np.nan_to_num(d["dg_std"].to_numpy(float))
    span = max(1.0, float(np.max(np.abs(dg) + 2 * s)) + 0.1) if len(d) else 1.0
    span = min(span, 3.0)
    x_left, x_right = np.linspace(-span, 0, 300), np.linspace(0, span, 300)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 5.0))
        ax.axvspan(-config.window, config.window, color=WINDOW_COLOR, alpha=0.10, lw=0)
        ax.plot(
            x_left,
            log_i0(x_left, config.kT),
            color="0.2",
            lw=1.8,
            label="ΔGH* < 0: i0 = e k0 / (1 + exp(−ΔG/kT))",
        )
        ax.plot(
            x_right,
            log_i0(x_right, config.kT),
            color="0.2",
            lw=1.8,
            ls="--",
            label="ΔGH* > 0: i0 = e k0 / (1 + exp(ΔG/kT))",
        )
        y = log_i0(dg, config.kT)
        sc = None
        if len(d):
            ax.errorbar(
                dg, y, xerr=2 * s, fmt="none", ecolor=MODEL_COLOR, elinewidth=0.8, alpha=0.45, capsize=2
            )
            ax.errorbar(dg, y, xerr=s, fmt="none", ecolor=MODEL_COLOR, elinewidth=2.2, alpha=0.8)
            sc = ax.scatter(dg, y, c=s, cmap="plasma", s=28, zorder=3, edgecolors="k", linewidths=0.4)
        if _has_dft(d):
            dft = _host_value(d)
            ok = np.isfinite(dft)
            ax.plot(
                dft[ok], log_i0(dft[ok], config.kT), "x", color=DFT_COLOR, ms=7, mew=2, zorder=4, label="DFT"
            )
        ax.set_xlim(-span, span)
        ymin = float(log_i0(span, config.kT))
        ax.set_ylim(ymin - 0.5, 0.3)
        _rank_labels(ax, d.head(config.label_max), config.kT)
        ax.set_xlabel("ΔGH* (eV)")
        ax.set_ylabel("log10(i0 / e k0)")
        ax.set_title(
            f"HER volcano (Nørskov et al. 2005, kT = {config.kT:.4f} eV)\n"
            f"bars: 1σ and 2σ of ΔGH*; numbers: rank in the table (best {config.label_max})"
        )
        ax.text(
            -span * 0.97,
            0.1,
            "binds H* too strongly\n(desorption-limited)",
            fontsize=8,
            color="0.3",
            va="top",
        )
        ax.text(
            span * 0.97,
            0.1,
            "binds H* too weakly\n(adsorption-limited)",
            fontsize=8,
            color="0.3",
            ha="right",
            va="top",
        )
        if sc is not None:
            fig.colorbar(sc, ax=ax, label="σ(ΔGH*) (eV)", shrink=0.85)
        ax.legend(loc="lower center", framealpha=0.9)
        return save(fig, out, "volcano", config.dpi)


def _rank_labels(ax, d, kT: float, gap: float = 9.0) -> None:
    """Rank numbers beside volcano points, spread vertically (≥ ``gap`` points apart) with leader lines."""
    ax.figure.canvas.draw()  # settle the layout so that display coordinates are final
    trans = ax.transData
    for side in (-1, 1):
        rows = d[(d["dg"] < 0) if side < 0 else (d["dg"] >= 0)]
        if rows.empty:
            continue
        pts = trans.transform(np.column_stack([rows["dg"], log_i0(rows["dg"].to_numpy(float), kT)]))
        scale = ax.figure.dpi / 72.0  # display pixels per point
        order = np.argsort(-pts[:, 1])
        placed: list[float] = []
        for k in order:
            y = pts[k, 1] / scale
            if placed and y > placed[-1] - gap:
                y = placed[-1] - gap
            placed.append(y)
            r = rows.iloc[k]
            ax.annotate(
                str(r["rank"]),
                (r["dg"], log_i0(r["dg"], kT)),
                xytext=(14 * side, y - pts[k, 1] / scale),
                textcoords="offset points",
                fontsize=7,
                ha="left" if side > 0 else "right",
                va="center",
                color="0.1",
                arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5},
            )


def _trend(
    df,
    out: Path,
    config: ReportConfig,
    group: str,
    order: list[str],
    color_by: str,
    name: str,
    xlabel: str,
    title: str,
) -> dict[str, Path]:
    plt = _plt()
    d = df[np.isfinite(df["dg"].to_numpy(float))]
    pos = {g: i for i, g in enumerate(order)}
    rng = np.random.default_rng(0)  # fixed jitter so the figure is reproducible
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(6.0, 1.5 + 0.42 * len(order)), 4.6))
        ax.axhspan(
            -config.window,
            config.window,
            color=WINDOW_COLOR,
            alpha=0.12,
            lw=0,
            label=f"|ΔGH*| < {config.window:g} eV",
        )
        ax.axhline(0.0, color="0.3", lw=0.8)
        x = np.array([pos[g] for g in d[group]], dtype=float) + rng.uniform(-0.18, 0.18, len(d))
        s = np.nan_to_num(d["dg_std"].to_numpy(float))
        ax.errorbar(x, d["dg"], yerr=s, fmt="none", ecolor="0.5", elinewidth=0.8, alpha=0.7)
        if color_by == "n_N":
            from matplotlib.colors import BoundaryNorm

            c = d["n_N"].astype(float).to_numpy()
            sc = ax.scatter(
                x,
                d["dg"],
                c=c,
                cmap="viridis",
                norm=BoundaryNorm(np.arange(-0.5, 7.0), 256),
                s=22,
                zorder=3,
                edgecolors="k",
                linewidths=0.3,
            )
            fig.colorbar(sc, ax=ax, label="number of N in the first shell", shrink=0.85, ticks=range(7))
        else:
            from structures.metals import METALS

            row = {m: ("3d" if i < 8 else "4d" if i < 15 else "5d") for i, m in enumerate(METALS)}
            rows = np.array([row.get(m, "other") for m in d["metal"]])
            for r, col in (("3d", "#1b9e77"), ("4d", "#d95f02"), ("5d", "#7570b3"), ("other", "0.5")):
                k = rows == r
                if k.any():
                    ax.scatter(
                        x[k],
                        d["dg"].to_numpy(float)[k],
                        color=col,
                        s=22,
                        zorder=3,
                        edgecolors="k",
                        linewidths=0.3,
                        label=f"{r} metal",
                    )
        med = d.groupby(group)["dg"].median()
        for g, v in med.items():
            ax.hlines(v, pos[g] - 0.32, pos[g] + 0.32, color="k", lw=2.0, zorder=4)
        ax.plot([], [], color="k", lw=2.0, label="median")
        ax.set_xticks(
            np.arange(len(order)),
            order,
            rotation=60 if len(order) > 8 else 0,
            ha="right" if len(order) > 8 else "center",
            fontsize=8,
        )
        ax.set_xlim(-0.6, len(order) - 0.4)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ΔGH* (eV)  (bars: 1σ)")
        ax.set_title(title)
        ax.legend(loc="best", framealpha=0.9)
        ax.grid(axis="x", visible=False)
        return save(fig, out, name, config.dpi)


def trends(df, out: Path, config: ReportConfig) -> dict[str, dict[str, Path]]:
    """ΔGH* per metal pair (coloured by number of N) and per motif (coloured by the metal's row)."""
    return {
        "trend_metal": _trend(
            df,
            out,
            config,
            "pair",
            pair_order(df),
            "n_N",
            "trend_metal",
            "metal pair",
            "ΔGH* per metal pair (each point a motif)",
        ),
        "trend_motif": _trend(
            df,
            out,
            config,
            "motif",
            motif_order(df),
            "metal",
            "trend_motif",
            "motif (sorted by number of N)",
            "ΔGH* per motif (each point a metal pair)",
        ),
    }


def _validated(df, dft_fit: bool = False):
    """Rows with a DFT and a model ΔGH*: the held-out ones, or with ``dft_fit`` those whose DFT labels fitted
    the model (its DFT anchoring or its training; column ``dft_fit``; no test of that model's ΔGH*). Geometry
    failures (:func:`geometry_failures`) are in neither."""
    ok = np.isfinite(df["dft_dg"].to_numpy(float)) & np.isfinite(df["dg"].to_numpy(float))
    fit = _fit_mask(df)
    return df[ok & (fit if dft_fit else ~fit) & ~geometry_failures(df)]


def geometry_failures(df) -> np.ndarray:
    """(rows,) bool: validated rows whose DFT single points put a force above ``MAX_STATE_FORCE`` on an atom
    or above ``MAX_H_FORCE`` on H (columns ``dft_fmax``, ``dft_h_force`` of `screen validate`): the model's
    geometry is far from any DFT minimum, so the ΔGH* error there measures the geometry, not the energy
    (:func:`screening.bench_model.is_geometry_failure`). All False where those columns are absent."""
    from screening.bench_model import is_geometry_failure

    if "dft_fmax" not in df and "dft_h_force" not in df:
        return np.zeros(len(df), dtype=bool)
    fmax = df["dft_fmax"].to_numpy(float) if "dft_fmax" in df else np.full(len(df), np.nan)
    h = df["dft_h_force"].to_numpy(float) if "dft_h_force" in df else np.full(len(df), np.nan)
    return np.array([is_geometry_failure(a, b) for a, b in zip(fmax, h)], dtype=bool)


def _fit_mask(df) -> np.ndarray:
    """Rows whose host's DFT labels fitted the model, by anchoring or training (column ``dft_fit``; all False
    without)."""
    return df["dft_fit"].to_numpy(bool) if "dft_fit" in df else np.zeros(len(df), dtype=bool)


def validation_stats(df, window: float = ReportConfig.window) -> dict[str, Any]:
    """MAE, RMSE, mean signed error (model − DFT), fractions inside 1σ and 2σ, n, over the validated rows
    whose DFT labels did not fit the model, by anchoring or training (``n_dft_fit`` counts those left out); eV.
    With validated rows also ``candidates``, :func:`candidate_check` at ``window`` (eV, the report's)."""
    d = _validated(df)
    n_fit = len(_validated(df, dft_fit=True))
    host = _host_stats(df)
    failed = geometry_failures(df) & np.isfinite(df["dft_dg"].to_numpy(float))
    n_geom = {"n_geometry_failure": int(failed.sum())} if failed.any() else {}
    host = {**host, **n_geom}
    if d.empty:
        return {"n": 0, "n_dft_fit": n_fit, **host}
    err = d["dg"].to_numpy(float) - d["dft_dg"].to_numpy(float)
    s = d["dg_std"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(err) / s
    out = {
        "n": int(len(d)),
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mse": float(np.mean(err)),
        "within_1sigma": float(np.mean(z <= 1.0)),
        "within_2sigma": float(np.mean(z <= 2.0)),
        "n_dft_fit": n_fit,
        "candidates": candidate_check(df, window),
    }
    return {**out, **host}


def candidate_check(df, window: float, k_sigma: float = 2.0) -> dict[str, Any]:
    """Does DFT confirm the screen's candidates? Over the held-out validated hosts (DFT ΔGH* of the host:
    :func:`_host_value`, its lowest labelled site, geometry failures at the model's site left out; hosts
    whose DFT fitted the model left out): ``n_listed`` hosts the model puts inside ±``window`` (eV), of which
    DFT confirms ``n_confirmed``; ``n_dft_active`` hosts DFT puts inside, of which the model's point list
    holds ``n_found`` and its ``k_sigma`` list (|ΔGH*| < window + k σ, ``n_sigma_list`` hosts long)
    ``n_found_sigma``. Host names in ``confirmed``, ``unconfirmed`` and ``missed`` (DFT-active hosts outside
    the kσ list). {"n_hosts": 0} without validated rows."""
    dft = _host_value(df)
    dg = df["dg"].to_numpy(float)
    sd = np.nan_to_num(df["dg_std"].to_numpy(float))
    ok = np.isfinite(dft) & np.isfinite(dg) & ~_fit_mask(df)
    if not ok.any():
        return {"n_hosts": 0}
    host = df["host"].astype(str).to_numpy()
    listed = ok & (np.abs(dg) < window)
    dft_in = ok & (np.abs(dft) < window)
    wide = ok & (np.abs(dg) < window + k_sigma * sd)
    return {
        "window": window,
        "k_sigma": k_sigma,
        "n_hosts": int(ok.sum()),
        "n_listed": int(listed.sum()),
        "n_confirmed": int((listed & dft_in).sum()),
        "confirmed": list(host[listed & dft_in]),
        "unconfirmed": list(host[listed & ~dft_in]),
        "n_dft_active": int(dft_in.sum()),
        "n_found": int((dft_in & listed).sum()),
        "n_sigma_list": int(wide.sum()),
        "n_found_sigma": int((dft_in & wide).sum()),
        "missed": list(host[dft_in & ~wide]),
    }


def candidate_check_text(c: dict[str, Any]) -> str:
    """One line of :func:`candidate_check` for the report summary; '' without validated hosts."""
    if not c.get("n_hosts"):
        return ""
    w, k = c["window"], c["k_sigma"]
    names = f" ({', '.join(c['confirmed'])})" if c["confirmed"] else ""
    text = (
        f"of the {c['n_listed']} validated held-out host(s) the model puts within ±{w:g} eV, DFT confirms "
        f"{c['n_confirmed']}{names}; of the {c['n_dft_active']} DFT puts there (of {c['n_hosts']} validated), the "
        f"model's ±{w:g} eV list holds {c['n_found']} and its {k:g}σ list (|ΔGH*| < {w:g} eV + {k:g}σ, "
        f"{c['n_sigma_list']} of the {c['n_hosts']}) {c['n_found_sigma']}"
    )
    if c["missed"]:
        text += f"; missed by both: {', '.join(c['missed'])}"
    return text


def _host_stats(df) -> dict[str, float]:
    """The host's ΔGH* is a minimum over sites: MAE of the model's ΔGH* against DFT's lowest labelled site
    (``dft_dg_host``, validate --site-classes) over the held-out rows that have one, also where the model's own
    site has no DFT label; n_other_site: rows where that site is not the model's. {} without such rows."""
    host = _host_dft(df)
    dg = df["dg"].to_numpy(float)
    ok = np.isfinite(host) & np.isfinite(dg) & ~_fit_mask(df) & ~geometry_failures(df)
    if not ok.any():
        return {}
    site = df["dft_site_host"].astype(str).to_numpy() if "dft_site_host" in df else np.full(len(df), "")
    best = df["best_site"].astype(str).to_numpy() if "best_site" in df else np.full(len(df), "")
    return {
        "mae_host": float(np.mean(np.abs(dg[ok] - host[ok]))),
        "n_host": int(ok.sum()),
        "n_other_site": int((site[ok] != best[ok]).sum()),
    }


def _host_dft(d) -> np.ndarray:
    """DFT ΔGH* of each row's host at its lowest labelled site (``dft_dg_host``, a float column of
    :func:`reports.tables.load_table`), NaN where not written."""
    return d["dft_dg_host"].to_numpy(float) if "dft_dg_host" in d else np.full(len(d), np.nan)


def parity(df, out: Path, config: ReportConfig) -> dict[str, Path]:
    """Model ΔGH* (± 1σ, 2σ) against DFT ΔGH*; y = x and the ±window band. Hosts whose DFT labels fitted
    the model (its DFT anchoring or its training) are drawn apart (grey squares) and left out of the
    statistics."""
    import pandas as pd

    plt = _plt()
    d = _validated(df)
    fit = _validated(df, dft_fit=True)
    x, y, s = d["dft_dg"].to_numpy(float), d["dg"].to_numpy(float), np.nan_to_num(d["dg_std"].to_numpy(float))
    xf, yf = fit["dft_dg"].to_numpy(float), fit["dg"].to_numpy(float)
    st = validation_stats(df, config.window)
    xh = _host_dft(d)
    moved = np.isfinite(xh) & (xh < x - 1e-6)  # DFT's lowest labelled site is another site
    part = df[  # held out, DFT at other sites of the host but not at the model's
        np.isfinite(_host_dft(df)) & ~np.isfinite(df["dft_dg"].to_numpy(float)) & ~_fit_mask(df)
        & np.isfinite(df["dg"].to_numpy(float))
    ]  # fmt: skip
    xp, yp = _host_dft(part), part["dg"].to_numpy(float)
    bond = pd.concat([d, fit])  # `screen validate --bond-line`: DFT with the M–M bond relaxed
    bond = bond[np.isfinite(bond["dft_dg_bond"].to_numpy(float))] if "dft_dg_bond" in bond else bond.iloc[:0]
    xb0, xb, yb = (bond[c].to_numpy(float) for c in ("dft_dg", "dft_dg_bond", "dg"))
    lo = float(np.r_[x, xf, y - 2 * s, yf, xh[moved], xp, yp, xb].min()) - 0.1
    hi = float(np.r_[x, xf, y + 2 * s, yf, xh[moved], xp, yp, xb].max()) + 0.1
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.0, 6.6))
        t = np.array([lo, hi])
        ax.fill_between(
            t, t - config.window, t + config.window, color="0.85", lw=0, label=f"±{config.window:g} eV"
        )
        ax.plot(t, t, color="0.3", lw=1.0)
        ax.errorbar(
            x, y, yerr=2 * s, fmt="none", ecolor=MODEL_COLOR, elinewidth=0.8, alpha=0.5, capsize=2, label="2σ"
        )
        ax.errorbar(
            x, y, yerr=s, fmt="o", color=MODEL_COLOR, mfc="white", ms=5, elinewidth=2.2, label="model ± 1σ"
        )
        if len(fit):
            ax.plot(xf, yf, "s", color="0.55", ms=5, label=f"fitted the model ({len(fit)}, not a test)")
        if moved.any() or len(part):
            for k in np.flatnonzero(moved):
                ax.plot([x[k], xh[k]], [y[k], y[k]], color="tab:red", lw=0.7, alpha=0.6)
            ax.plot(
                np.r_[xh[moved], xp], np.r_[y[moved], yp], "x", color="tab:red", ms=6,
                label=f"DFT at the host's lowest labelled site ({int(moved.sum()) + len(part)})",
            )  # fmt: skip
        geo = df[geometry_failures(df) & np.isfinite(df["dft_dg"].to_numpy(float))]
        if len(geo):  # not drawn: their DFT values (eV above) would set the axes
            names = ", ".join(geo["host"].astype(str).iloc[: config.label_max])
            ax.plot([], [], " ", label=f"left out, DFT force > cap at the model's geometry: {names}")
        if len(bond):
            for k in range(len(bond)):
                ax.plot([xb0[k], xb[k]], [yb[k], yb[k]], color="tab:purple", lw=0.9, alpha=0.7)
            ax.plot(xb, yb, "D", color="tab:purple", ms=4, label=f"DFT, M–M bond relaxed ({len(bond)})")
        with np.errstate(divide="ignore", invalid="ignore"):
            outside = np.abs(y - x) > 2 * s  # name the candidates whose DFT value lies outside the 2σ bar
        if outside.any():  # the legend explains the names only when there are some
            ax.plot([], [], " ", label="named: DFT outside 2σ")
        for k in np.flatnonzero(outside)[: config.label_max]:
            ax.annotate(
                d["host"].iloc[k], (x[k], y[k]), xytext=(4, -10), textcoords="offset points", fontsize=7
            )
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_xlabel("DFT ΔGH* (eV)")
        ax.set_ylabel("model ΔGH* (eV)")
        held = " held-out" if len(fit) else ""
        ax.set_title(
            f"Model vs DFT (n = {st['n']}{held}): MAE {st['mae']:.3f} eV, RMSE {st['rmse']:.3f} eV\n"
            f"inside 1σ: {st['within_1sigma']:.0%}, inside 2σ: {st['within_2sigma']:.0%}"
            + (
                f"; MAE {st['mae_host']:.3f} eV vs DFT's lowest site ({st['n_host']})"
                if st.get("n_other_site")
                else ""
            )
            if st["n"]
            else (
                f"Model vs DFT's lowest labelled site (n = {st['n_host']}{held}): MAE {st['mae_host']:.3f} eV\n"
                "(no DFT at the model's own sites)"
                if st.get("n_host")
                else "Model vs DFT: every DFT host fitted the model (no test yet)"
            )
        )
        fig.legend(loc="outside lower center", ncols=2, framealpha=0.9)  # below the axes: never over a point
        return save(fig, out, "parity", config.dpi)


def calibration(df, out: Path, config: ReportConfig) -> dict[str, Path]:
    """Left: |model − DFT| against σ with the |err| = σ, 2σ lines. Right: observed vs expected coverage of
    central Gaussian intervals (a calibrated σ lies on the diagonal; below it = over-confident)."""
    plt = _plt()
    from scipy.stats import norm

    d = _validated(df)  # held-out hosts only: the model was fitted to the others
    err = np.abs(d["dg"].to_numpy(float) - d["dft_dg"].to_numpy(float))
    s = d["dg_std"].to_numpy(float)
    with plt.rc_context(STYLE):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.0, 4.6))
        top = (float(np.nanmax(s)) if s.size else 0.1) * 1.15 + 1e-3
        t = np.array([0.0, top])
        a1.plot(t, t, color="0.3", lw=1.0, label="|err| = σ (68% below if calibrated)")
        a1.plot(t, 2 * t, color="0.3", lw=1.0, ls="--", label="|err| = 2σ (95% below)")
        a1.scatter(s, err, color=MODEL_COLOR, s=30, edgecolors="k", linewidths=0.4, zorder=3)
        a1.set_xlim(0, top)
        a1.set_ylim(0, max(2.2 * top, float(np.nanmax(err)) * 1.08 if err.size else 0.1))
        a1.set_xlabel("model σ(ΔGH*) (eV)")
        a1.set_ylabel("|model − DFT| (eV)")
        a1.set_title("Observed error vs predicted σ")
        a1.legend(loc="upper left", framealpha=0.9)
        p = np.linspace(0.0, 1.0, 101)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = err / s
        zq = norm.ppf(0.5 + p / 2)
        obs = np.array([np.mean(z <= q) if z.size else np.nan for q in zq])
        area = float(np.trapezoid(np.abs(obs - p), p)) if z.size else float("nan")
        a2.plot(p, p, color="0.3", lw=1.0, label="calibrated")
        a2.step(
            p,
            obs,
            where="post",
            color=MODEL_COLOR,
            lw=2.0,
            label=f"observed (miscalibration area {area:.2f})",
        )
        a2.fill_between(p, p, obs, step="post", color=MODEL_COLOR, alpha=0.15)
        a2.set_xlim(0, 1)
        a2.set_ylim(0, 1)
        a2.set_aspect("equal")
        a2.set_xlabel("expected coverage of the central interval")
        a2.set_ylabel("observed fraction of DFT values inside")
        a2.set_title(f"Coverage (n = {len(d)})")
        a2.legend(loc="upper left", framealpha=0.9)
        return save(fig, out, "calibration", config.dpi)


def make_figures(
    df, out: str | os.PathLike, config: ReportConfig = ReportConfig()
) -> dict[str, dict[str, Path]]:
    """Every figure for a ranked table; {name: {"png": path, "svg": path}} in display order."""
    out = Path(out)
    figs: dict[str, dict[str, Path]] = {"ranked": ranked(df, out, config)}
    figs |= heatmaps(df, out, config)
    figs["volcano"] = volcano(df, out, config)
    figs |= trends(df, out, config)
    if _has_dft(df):
        figs["parity"] = parity(df, out, config)
        figs["calibration"] = calibration(df, out, config)
    return figs
