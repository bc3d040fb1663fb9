"""Ranking tables: load the ΔGH* rows of a results store, rank them, select candidates, write CSV/Markdown.

The ranking key is |ΔGH*| (eV): the HER optimum is ΔGH* = 0. Every row keeps its σ (total, epistemic,
aleatoric), flags and provenance (model, relaxation and settings hashes, code version). Two columns make
the ranking uncertainty-aware:

- ``p_active`` = P(|ΔGH*| < window) under N(ΔGH*, σ²): how likely the candidate is really in the window;
- ``log_i0`` / ``log_i0_expected``: log10 of Nørskov's relative exchange current at ΔGH* and its posterior
  mean E[i0] under N(ΔGH*, σ²) (see :func:`log_i0`).

Selections (``screen export`` / ``validate``): ``uncertain`` | ``top:N`` | ``id:HOST[,HOST]`` | ``all``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from structures.common import InputError, atomic_write_text

KT_300K = 8.617333262e-5 * 300.0  # eV, k_B T at 300 K (Nørskov 2005 uses 300 K)
DFT_COLUMNS = ("dft_dg", "dft_de", "dft_engine", "dft_settings", "dft_relax", "dft_status", "dft_site",
               "dft_wall_s", "dft_date", "dft_dg_host", "dft_site_host", "dft_host_classes", "dft_mm_force_host",
               "dft_mm_force", "dft_dg_bond", "dft_mm_k_host", "dft_mm_k", "dft_bond_status", "dft_fmax",
               "dft_h_force")  # fmt: skip
#: bond-line columns (`screen validate --bond-line`): in the table only when some row has one
BOND_COLUMNS = ("dft_dg_bond", "dft_mm_k_host", "dft_mm_k")
#: columns of the ranking table, in order (those missing from a store are left out)
TABLE_COLUMNS = (
    "rank", "host", "metal", "metal2", "motif", "n_N", "best_site", "best_site_class", "dg", "dg_std", "dg_std_epistemic",
    "dg_std_aleatoric", "p_active", "log_i0", "log_i0_expected", "site_agreement", "e_form", "e_form_std",
    "flags", "mm_stretch", "converged", "dft_dg", "dft_fmax", "dft_dg_host", "dft_site_host", "dft_mm_force_host", "dft_mm_force", "dft_dg_bond", "dft_mm_k_host", "dft_mm_k", "dft_engine", "dft_settings", "model_hash", "relax_hash", "settings_hash",
    "code_version", "id",
)  # fmt: skip
SELECTION_HELP = (
    "uncertain, bald, bald:per-metal, random, random:per-metal, top:N, flag:NAME, id:HOST[,HOST] or all"
)


@dataclass(frozen=True)
class ReportConfig:
    """Report settings.

    window: |ΔGH*| (eV) counted as "active" (p_active, shaded band in the figures, the ``uncertain`` rule).
    z_uncertain: a row is ``uncertain`` when [ΔGH* − zσ, ΔGH* + zσ] crosses ±window or it carries the
    ``high_variance`` flag. kT: eV, temperature of the volcano. max_ranked: candidates shown in the ranked
    figure. annotate_max: heatmap cells above which numbers are not printed. dpi: PNG resolution.
    """

    window: float = 0.2
    z_uncertain: float = 2.0
    kT: float = KT_300K
    max_ranked: int = 40
    annotate_max: int = 160
    label_max: int = 12
    dpi: int = 150


PRESETS: dict[str, ReportConfig] = {
    "default": ReportConfig(),
    "paper": ReportConfig(dpi=300, max_ranked=25),
    "strict": ReportConfig(window=0.1, z_uncertain=3.0),
}


def get_preset(name: str) -> ReportConfig:
    if name not in PRESETS:
        raise InputError(f"unknown report preset '{name}'; allowed: {', '.join(PRESETS)}")
    return PRESETS[name]


# ----------------------------------------------------------------------------------------------------------
# physics helpers
# ----------------------------------------------------------------------------------------------------------
def log_i0(dg: np.ndarray | float, kT: float = KT_300K) -> np.ndarray:
    """log10(i0 / (e k0)) of Nørskov's kinetic model (J. Electrochem. Soc. 152, J23 (2005)).

    ΔG < 0 (H* binds too strongly, desorption-limited): i0 = e k0 / (1 + exp(−ΔG/kT));
    ΔG > 0 (H* binds too weakly, adsorption-limited):  i0 = e k0 / (1 + exp(ΔG/kT)); both equal
    e k0 / (1 + exp(|ΔG|/kT)). Written with logaddexp so that |ΔG| of several eV does not overflow.
    """
    x = np.abs(np.asarray(dg, dtype=float)) / kT
    return -np.logaddexp(0.0, x) / math.log(10.0)


# standard-normal grid for E[i0]: the integrand has a kink at ΔG = 0 and varies on the kT scale, which
# Gauss-Hermite rules miss; a dense grid (step 0.008σ) resolves it for any σ up to ~3 eV.
_Z = np.linspace(-8.0, 8.0, 2001)
_ZW = np.exp(-0.5 * _Z**2)
_ZW /= _ZW.sum()


def log_i0_expected(dg: np.ndarray, sigma: np.ndarray, kT: float = KT_300K) -> np.ndarray:
    """log10 E[i0/(e k0)] with ΔG ~ N(dg, σ²) (eV): the posterior-mean activity (quadrature on a ±8σ grid)."""
    dg = np.asarray(dg, dtype=float)
    s = np.nan_to_num(np.asarray(sigma, dtype=float), nan=0.0)
    out = np.empty(dg.shape)
    flat_dg, flat_s, flat_out = dg.reshape(-1), s.reshape(-1), out.reshape(-1)
    for lo in range(0, flat_dg.size, 2048):  # chunks keep memory at ~2048 x 2001 floats
        d, sg = flat_dg[lo : lo + 2048, None], flat_s[lo : lo + 2048, None]
        flat_out[lo : lo + 2048] = np.log10((10.0 ** log_i0(d + sg * _Z, kT)) @ _ZW)
    return out


def p_active(dg: np.ndarray, sigma: np.ndarray, window: float) -> np.ndarray:
    """P(|ΔG| < window) for ΔG ~ N(dg, σ²); σ = 0 gives 0 or 1; NaN where dg is NaN."""
    from scipy.stats import norm

    dg = np.asarray(dg, dtype=float)
    s = np.asarray(sigma, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = norm.cdf((window - dg) / s) - norm.cdf((-window - dg) / s)
    sharp = (np.abs(dg) < window).astype(float)
    p = np.where((s > 0) & np.isfinite(s), p, sharp)
    return np.where(np.isfinite(dg), p, np.nan)


def pair_label(metal: str, metal2: str | None) -> str:
    """``Fe2`` for a homonuclear pair, ``FeCo`` for a heteronuclear one."""
    return f"{metal}2" if not metal2 or metal2 == metal else f"{metal}{metal2}"


# ----------------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------------
def load_table(db_path: str | os.PathLike, model_hash: str | None = None, settings_hash: str | None = None):
    """ΔGH* rows of a results store joined with their DFT validation columns (``dft_*``), one row per host.

    When the store holds several (model, settings) runs and none is chosen, the run with the most rows is
    kept, the one written last among runs as large (a re-run under new settings wins: ``df.attrs["runs"]``
    lists them all). InputError: missing/corrupt database, no ΔGH* rows.
    """
    from screening.store import load_results

    df = load_results(db_path, model_hash=model_hash, settings_hash=settings_hash)
    # the run with the most rows; among runs as large, the one written last (the largest row id)
    g = df.groupby(["model_hash", "settings_hash"], dropna=False)["id"].agg(["size", "max"])
    runs = g.sort_values(["size", "max"], ascending=False)["size"]
    if df.empty:
        chosen = (
            ""
            if not (model_hash or settings_hash)
            else f" for model {model_hash or '*'} / settings {settings_hash or '*'}"
        )
        raise InputError(
            f"database '{db_path}' has no ΔGH* results{chosen}; allowed: a database written by `screen run`"
        )
    if len(runs) > 1 and not (model_hash and settings_hash):
        mh, sh = runs.index[0]
        df = df[(df["model_hash"] == mh) & (df["settings_hash"] == sh)].reset_index(drop=True)
    df.attrs["runs"] = [{"model_hash": m, "settings_hash": s, "rows": int(n)} for (m, s), n in runs.items()]
    extra = run_model_extra(db_path, str(df["model_hash"].iloc[0]))
    recal = _recalibration(extra)
    anchor = _record(recal, "anchor")
    df.attrs["anchor"] = anchor
    df.attrs["dg_fit"] = _record(recal, "dg_fit")
    df.attrs["dft_trained"] = sorted(checkpoint_dft_hosts(extra))
    df["dft_fit"] = df["host"].isin(_fit_hosts(extra))
    dft = read_dft_columns(db_path, df["id"].tolist())
    for c in DFT_COLUMNS:
        df[c] = [dft.get(int(i), {}).get(c) for i in df["id"]]
    for c in (
        "dft_dg",
        "dft_de",
        "dft_wall_s",
        "dft_dg_host",
        "dft_mm_force_host",
        "dft_mm_force",
        "dft_fmax",
        "dft_h_force",
        *BOND_COLUMNS,
    ):
        df[c] = np.asarray([np.nan if v is None else float(v) for v in df[c]], dtype=float)
    return df


def run_model_extra(db_path: str | os.PathLike, model_hash: str) -> dict[str, Any]:
    """The ``extra`` entry of the checkpoint that wrote the run ``model_hash``, read from the file its run
    record names: its recalibration (DFT anchoring, σ calibration) and training provenance among others;
    {} when the file is gone, unreadable or was replaced since the run."""
    import ase.db

    from potentials import checkpoint

    db = ase.db.connect(str(db_path), type="db")
    for row in db.select(kind="run", model_hash=model_hash, include_data=False):
        path = Path(str(row.get("model_path", "")))
        if not path.is_file():
            continue
        try:
            payload = checkpoint.load(path)
        except Exception:  # noqa: BLE001 - an unreadable model only costs the marking
            continue
        if payload["hash"][:16] != model_hash.removeprefix("m"):
            continue  # the file was replaced since the run: its anchoring is another's
        return dict(payload.get("extra") or {})
    return {}


def _recalibration(extra: dict[str, Any]) -> dict[str, Any]:
    recal = extra.get("recalibration")
    return recal if isinstance(recal, dict) else {}


def checkpoint_dft_hosts(extra: dict[str, Any]) -> set[str]:
    """Hosts whose DFT labels the model was trained on, from its checkpoint ``extra``
    (:data:`potentials.checkpoint.DFT_HOSTS`)."""
    from potentials import checkpoint

    return checkpoint.dft_hosts({"extra": extra})


def _fit_hosts(extra: dict[str, Any]) -> set[str]:
    anchor = _record(_recalibration(extra), "anchor")
    return {str(h) for h in (anchor or {}).get("hosts", ())} | checkpoint_dft_hosts(extra)


def run_recalibration(db_path: str | os.PathLike, model_hash: str) -> dict[str, Any]:
    """The recalibration record (``extra["recalibration"]``) of the model that wrote the run ``model_hash``
    (:func:`run_model_extra`): its DFT anchoring (``anchor``, ``screen anchor``) and ΔGH* σ calibration
    (``dg_fit``, ``screen anchor --sigma-only``) among others; {} without one."""
    return _recalibration(run_model_extra(db_path, model_hash))


def _record(recal: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = recal.get(key)
    return value if isinstance(value, dict) else None


def run_anchor(db_path: str | os.PathLike, model_hash: str) -> dict[str, Any] | None:
    """The DFT anchoring record (``screen anchor``, :func:`screening.anchoring.fit_anchor`) of the run
    ``model_hash`` (:func:`run_recalibration`); None when the model has none."""
    return _record(run_recalibration(db_path, model_hash), "anchor")


def dft_fit_hosts(db_path: str | os.PathLike, model_hash: str) -> set[str]:
    """Hosts whose DFT labels fitted the model of the run ``model_hash``: its DFT anchoring's (``screen
    anchor``) and those it was trained or fine-tuned on (checkpoint provenance); empty without either. Their
    DFT values are no test of that model's ΔGH*."""
    return _fit_hosts(run_model_extra(db_path, model_hash))


def dg_fit_text(fit: dict[str, Any] | None) -> str:
    """One line describing a ΔGH* σ calibration record (``screen anchor --sigma-only``); "" without one."""
    if not fit:
        return ""
    c1, c2 = fit.get("loho_coverage", [float("nan")] * 2)
    return (
        f"calibrated against plane-wave DFT: σ × {float(fit['factor']):.3f}, fitted on {fit['n_triples']} DFT "
        f"triple(s) of {len(fit['hosts'])} hosts the model never saw ({', '.join(fit['hosts'])}); "
        f"leave-one-host-out coverage 1σ {c1:.2f}, 2σ {c2:.2f}"
    )


def anchor_text(anchor: dict[str, Any] | None) -> str:
    """One line describing an anchoring record for reports ("" without one)."""
    if not anchor:
        return ""
    hosts = list(anchor.get("hosts", ()))
    if anchor.get("class_offsets"):
        from screening.anchoring import class_offsets_text

        what = (
            "offsets by site class (applied to every H* site before the lowest is picked): "
            + class_offsets_text(anchor)
        )
        if anchor.get("pair_deviations"):
            what += f", plus metal-pair deviations for {len(anchor['pair_deviations'])} pairs"
    elif anchor.get("pair_offsets"):
        what = f"offsets for {len(anchor['pair_offsets'])} metal pairs, {anchor['offset']:+.3f} eV for the others"
    else:
        what = f"one offset, {anchor['offset']:+.3f} eV"
    return (
        f"{what}; σ_anchor {anchor['sigma_add']:.3f} eV (leave-one-host-out) added in quadrature; fitted on "
        f"{len(hosts)} DFT hosts ({', '.join(hosts)})"
    )


def read_dft_columns(db_path: str | os.PathLike, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """{row id: {dft_*: value}} for the given ΔG rows (only keys that are present)."""
    import ase.db

    out: dict[int, dict[str, Any]] = {}
    wanted = {int(i) for i in ids}
    db = ase.db.connect(str(db_path), type="db")
    for row in db.select("dft_status", include_data=False):
        if row.id in wanted:
            out[row.id] = {k: v for k, v in row.key_value_pairs.items() if k in DFT_COLUMNS}
    return out


def rank(df, config: ReportConfig = ReportConfig()):
    """Add derived columns (pair, abs_dg, p_active, log_i0, log_i0_expected, rank) and sort by |ΔGH*|.

    Ties in |ΔGH*| break by σ (smaller first), then host name; rows with NaN ΔGH* go last.
    """
    df = df.copy()
    df["pair"] = [pair_label(m, m2) for m, m2 in zip(df["metal"], df["metal2"])]
    df["abs_dg"] = df["dg"].abs()
    df["p_active"] = p_active(df["dg"].to_numpy(), df["dg_std"].to_numpy(), config.window)
    df["log_i0"] = log_i0(df["dg"].to_numpy(), config.kT)
    df["log_i0_expected"] = log_i0_expected(df["dg"].to_numpy(), df["dg_std"].to_numpy(), config.kT)
    df = df.sort_values(["abs_dg", "dg_std", "host"], na_position="last", kind="stable").reset_index(
        drop=True
    )
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    return df


# ----------------------------------------------------------------------------------------------------------
# selections
# ----------------------------------------------------------------------------------------------------------
def uncertain_mask(df, config: ReportConfig = ReportConfig()) -> np.ndarray:
    """Rows whose z·σ interval crosses ±window, or flagged ``high_variance`` (finite ΔGH* only)."""
    dg, s = df["dg"].to_numpy(float), np.nan_to_num(df["dg_std"].to_numpy(float), nan=np.inf)
    lo, hi = dg - config.z_uncertain * s, dg + config.z_uncertain * s
    w = config.window
    crosses = ((lo < w) & (hi > w)) | ((lo < -w) & (hi > -w))
    flagged = (
        df["flag_high_variance"].to_numpy(bool) if "flag_high_variance" in df else np.zeros(len(df), bool)
    )
    return np.isfinite(dg) & (crosses | flagged)


def bald_score(df) -> np.ndarray:
    """½ ln(1 + σ_ep² / σ_al²) per row (nats): the mutual information of a Gaussian ΔGH* prediction."""
    ep = df["dg_std_epistemic"].to_numpy(float)
    al = np.maximum(df["dg_std_aleatoric"].to_numpy(float), 1e-6)
    score = 0.5 * np.log1p((ep / al) ** 2)
    return np.where(np.isfinite(score) & np.isfinite(df["dg"].to_numpy(float)), score, -np.inf)


def select(
    df,
    spec: str,
    config: ReportConfig = ReportConfig(),
    limit: int | None = None,
    exclude: Sequence[str] = (),
):
    """Rows of a ranked table (:func:`rank`) chosen by ``spec``; at most ``limit`` of them.

    ``uncertain``: :func:`uncertain_mask`, the most ambiguous first (p_active closest to ½, then larger σ);
    ``bald``: the largest expected information gain about ΔGH* first, BALD for a Gaussian predictive,
    ½ ln(1 + σ_epistemic² / σ_aleatoric²) (active learning with DFT as the oracle); ``bald:per-metal``: the
    most informative host of each metal pair, pairs ordered by that score (spreads DFT labels over metals);
    ``random`` / ``random:per-metal``: a seeded random order (seed 0) of the rows with a finite ΔGH* / of one
    host per metal pair (representative anchoring labels: `screen bench dft-al` measured BALD-ordered DFT
    labels anchoring worse than random ones, because the model's σ does not track its DFT error);
    ``top:N``: the N best by |ΔGH*|; ``flag:NAME``: the rows carrying that flag (e.g. ``flag:pair_stretched``),
    in ranking order; ``id:HOST[,HOST]``: those hosts, in the order given; ``all``: every row.
    ``exclude``: hosts never selected (e.g. held-out hosts that must stay out of DFT training).
    """
    spec = (spec or "").strip()
    if limit is not None and limit < 1:
        raise InputError(f"--max {limit} is not allowed; allowed: an integer >= 1")
    if exclude:
        df = df[~df["host"].isin(set(exclude))]
    if spec == "all":
        out = df
    elif spec == "uncertain":
        out = df[uncertain_mask(df, config)].copy()
        out["_amb"] = (out["p_active"] - 0.5).abs()
        out = out.sort_values(["_amb", "dg_std"], ascending=[True, False], kind="stable").drop(columns="_amb")
    elif spec in ("bald", "bald:per-metal"):
        out = df.assign(_bald=bald_score(df))
        out = out[np.isfinite(out["_bald"])].sort_values("_bald", ascending=False, kind="stable")
        if spec == "bald:per-metal":
            pair = out["metal"].astype(str) + "-" + out["metal2"].astype(str)
            out = out[~pair.duplicated()]
        out = out.drop(columns="_bald")
    elif spec in ("random", "random:per-metal"):
        out = df[np.isfinite(df["dg"].to_numpy(float))]
        out = out.iloc[np.random.default_rng(0).permutation(len(out))]
        if spec == "random:per-metal":
            pair = out["metal"].astype(str) + "-" + out["metal2"].astype(str)
            out = out[~pair.duplicated()]
    elif spec.startswith("top:"):
        n = spec[4:]
        if not n.isdigit() or int(n) < 1:
            raise InputError(f"bad selection '{spec}'; allowed: top:N with N a positive integer, e.g. top:5")
        out = df[np.isfinite(df["dg"].to_numpy(float))].head(int(n))
    elif spec.startswith("flag:"):
        from screening.flags import FLAG_NAMES

        name = spec[5:]
        if name not in FLAG_NAMES:
            raise InputError(f"unknown flag '{name}' in selection '{spec}'; allowed: {', '.join(FLAG_NAMES)}")
        out = df[df[f"flag_{name}"].to_numpy(bool) & np.isfinite(df["dg"].to_numpy(float))]
    elif spec.startswith("id:"):
        names = [s.strip() for s in spec[3:].split(",") if s.strip()]
        known = list(df["host"])
        missing = [n for n in names if n not in set(known)]
        if not names or missing:
            shown = ", ".join(known[:6]) + (", ..." if len(known) > 6 else "")
            raise InputError(
                f"unknown host(s) '{','.join(missing) or spec}' in selection; allowed hosts: {shown}"
            )
        out = df.set_index("host", drop=False).loc[names].reset_index(drop=True)
    else:
        raise InputError(f"unknown selection '{spec}'; allowed: {SELECTION_HELP}")
    if limit is not None:
        out = out.head(limit)
    if out.empty:
        raise InputError(
            f"selection '{spec}' matches no candidate with a finite ΔGH*; allowed: {SELECTION_HELP}"
        )
    return out.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------------
def table_columns(df) -> list[str]:
    """Columns of :data:`TABLE_COLUMNS` present in ``df``; DFT columns only when any DFT value exists, the
    bond-line ones only when any bond line does."""

    def any_finite(c: str) -> bool:
        return c in df and bool(np.isfinite(df[c].to_numpy(float)).any())

    has_dft = any_finite("dft_dg")
    return [
        c
        for c in TABLE_COLUMNS
        if c in df and (has_dft or not c.startswith("dft_")) and (c not in BOND_COLUMNS or any_finite(c))
    ]


def fmt_value(v: Any, column: str = "") -> str:
    """Short text of one cell: eV to 3 decimals, probabilities to 2, NaN/None as empty."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, float | np.floating):
        return (
            f"{v:.2f}"
            if column in ("p_active", "log_i0", "log_i0_expected", "site_agreement")
            else f"{v:.3f}"
        )
    return str(v)


def to_markdown(df, columns: Sequence[str]) -> str:
    """A GitHub Markdown table (pipes in cells escaped)."""
    head = "| " + " | ".join(columns) + " |"
    sep = "|" + "|".join("---:" if _numeric(df[c]) else "---" for c in columns) + "|"
    lines = [head, sep]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(fmt_value(row[c], c).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _numeric(series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def write_tables(df, out: str | os.PathLike, config: ReportConfig = ReportConfig()) -> dict[str, Path]:
    """``ranking.csv`` (full precision) and ``ranking.md`` (rounded) of a ranked table, written atomically."""
    out = Path(out)
    cols = table_columns(df)
    csv_text = df[cols].to_csv(index=False, float_format="%.6g")
    note = (
        f"Ranked by |ΔGH*| (eV). σ = total std (epistemic ⊕ aleatoric). "
        f"p_active = P(|ΔGH*| < {config.window} eV). "
        f"log_i0 = log10(i0 / e k0), Nørskov 2005 at kT = {config.kT:.4f} eV.\n\n"
    )
    md_text = "# ΔGH* ranking\n\n" + note + to_markdown(df, cols)
    paths = {"csv": out / "ranking.csv", "md": out / "ranking.md"}
    atomic_write_text(paths["csv"], csv_text)
    atomic_write_text(paths["md"], md_text)
    return paths
