"""A single self-contained ``report.html``: summary, figures embedded as base64 PNG, a sortable ranking table.

No external resources (no CDN, fonts or scripts): it opens offline from a file. The table sorts by a click
on a column header (again: reverse); ``report.html#sort=dg_std`` (``#sort=-dg_std``: descending) sorts on
load.
"""

from __future__ import annotations

import base64
import html
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from structures.common import atomic_write_text

from .figures import geometry_failures
from .tables import ReportConfig, fmt_value, table_columns

CAPTIONS: dict[str, str] = {
    "ranked": "Best candidates by |ΔGH*|; thick bar 1σ, thin bar 2σ; green band: the activity window.",
    "heatmap_dg": "ΔGH* over metal pairs and motifs (blue: binds H* strongly, red: weakly; grey: no result).",
    "heatmap_sigma": "Predictive σ(ΔGH*) over metal pairs and motifs (epistemic and aleatoric combined).",
    "volcano": "HER volcano, Nørskov's kinetic model; each candidate on the curve with its 1σ and 2σ bars.",
    "trend_metal": "ΔGH* per metal pair; each point is one motif (colour: number of N), bar: median.",
    "trend_motif": "ΔGH* per motif; each point is one metal pair (colour: row of the metal), bar: median.",
    "parity": "Model ΔGH* (± 1σ, 2σ) against DFT ΔGH*.",
    "calibration": "Observed |model − DFT| against σ; coverage of Gaussian intervals (diagonal: calibrated).",
}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;
max-width:1250px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
figure{margin:1em 0;display:inline-block;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555;max-width:60em}
table{border-collapse:collapse;font-size:.8em;width:100%}
th,td{padding:.25em .5em;border-bottom:1px solid #eee;white-space:nowrap}
th{position:sticky;top:0;background:#f4f4f4;cursor:pointer;user-select:none;text-align:left}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}td.num{text-align:right;
font-variant-numeric:tabular-nums}tr.active td{background:#eefbee}tr.flagged td.flags{color:#b35900}
.scroll{overflow-x:auto;max-height:75vh}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}
dt{font-weight:600}code{font-size:.9em}
"""

# sort: numbers by data-v (empty last in both directions), text by localeCompare
_JS = """
(function(){
  var table=document.getElementById('ranking'); if(!table) return;
  var body=table.tBodies[0], heads=table.tHead.rows[0].cells;
  function key(td,num){var v=td.getAttribute('data-v'); if(num){return v===''?null:parseFloat(v);} return v;}
  function sortBy(col,desc){
    var num=heads[col].getAttribute('data-type')==='num';
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=key(a.cells[col],num), y=key(b.cells[col],num);
      if(x===null&&y===null) return 0; if(x===null) return 1; if(y===null) return -1;
      var c=num?(x-y):String(x).localeCompare(String(y)); return desc?-c:c;});
    rows.forEach(function(r){body.appendChild(r);});
    for(var i=0;i<heads.length;i++){heads[i].classList.remove('asc','desc');}
    heads[col].classList.add(desc?'desc':'asc');
  }
  Array.prototype.forEach.call(heads,function(th,i){
    th.addEventListener('click',function(){sortBy(i,th.classList.contains('asc'));});});
  var m=/sort=(-?)([A-Za-z0-9_]+)/.exec(window.location.hash);
  if(m){for(var i=0;i<heads.length;i++){if(heads[i].getAttribute('data-col')===m[2]){sortBy(i,m[1]==='-');}}}
})();
"""


_ASC = ' class="asc"'


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _cell(value: Any, column: str, numeric: bool) -> str:
    text = html.escape(fmt_value(value, column))
    if numeric:
        v = (
            ""
            if value is None or (isinstance(value, float) and not math.isfinite(value))
            else repr(float(value))
        )
        return f'<td class="num" data-v="{v}">{text}</td>'
    cls = ' class="flags"' if column == "flags" else ""
    return f'<td{cls} data-v="{text}">{text}</td>'


def table_html(df, config: ReportConfig) -> str:
    """The ranking table as HTML (id ``ranking``); numeric cells carry their full value in ``data-v``."""
    import pandas as pd

    cols = table_columns(df)
    numeric = {
        c: pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in cols
    }
    head = "".join(
        f'<th data-col="{html.escape(c)}" data-type="{"num" if numeric[c] else "text"}"'
        f"{_ASC if c == 'rank' else ''}>{html.escape(c)}</th>"
        for c in cols
    )
    rows = []
    for _, r in df.iterrows():
        cls = []
        if np.isfinite(r["dg"]) and abs(r["dg"]) < config.window:
            cls.append("active")
        if r.get("flags"):
            cls.append("flagged")
        attr = f' class="{" ".join(cls)}"' if cls else ""
        cells = "".join(_cell(r[c], c, numeric[c]) for c in cols)
        rows.append(f'<tr data-host="{html.escape(str(r["host"]))}"{attr}>{cells}</tr>')
    return (
        f'<div class="scroll"><table id="ranking"><thead><tr>{head}</tr></thead><tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table></div>"
    )


def flagged_text(df, flagged: int) -> str:
    """Flagged hosts with the count of each flag, and :func:`screening.flags.high_variance_note`."""
    from screening.flags import counts, high_variance_note

    n = counts(df["flags"])
    if not n:
        return "0"
    finite = np.isfinite(df["dg"].to_numpy(float))
    note = high_variance_note(n.get("high_variance", 0), df["dg_std"].to_numpy(float)[finite])
    return f"{flagged} (" + ", ".join(f"{k} {v}" for k, v in n.items()) + ")" + (f"; {note}" if note else "")


def summary(df, config: ReportConfig, db_path: str, stats: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Key facts shown at the top of the report (strings)."""
    dg = df["dg"].to_numpy(float)
    n_ok = int(np.isfinite(dg).sum())
    n_act = int((np.abs(dg) < config.window).sum())
    flagged = int((df["flags"].fillna("").astype(str) != "").sum())
    out = {
        "database": str(db_path),
        "hosts": f"{len(df)} ({n_ok} with a finite ΔGH*)",
        f"|ΔGH*| < {config.window:g} eV": f"{n_act}; expected under σ: {np.nansum(df['p_active']):.1f}",
        "flagged": flagged_text(df, flagged),
        "model hash": ", ".join(sorted(set(map(str, df["model_hash"])))),
        "settings hash": ", ".join(sorted(set(map(str, df["settings_hash"])))),
        "code version": ", ".join(sorted(set(map(str, df["code_version"])))),
        "ΔGH* correction (eV)": ", ".join(f"{c:g}" for c in sorted(set(df["correction"].dropna()))),
    }
    from .tables import anchor_text, dg_fit_text

    if df.attrs.get("anchor"):
        out["DFT anchoring of ΔGH*"] = anchor_text(df.attrs["anchor"])
    if df.attrs.get("dg_fit"):
        out["ΔGH* σ"] = dg_fit_text(df.attrs["dg_fit"])
    if df.attrs.get("dft_trained"):
        trained = df.attrs["dft_trained"]
        out["trained on DFT"] = (
            f"{len(trained)} host{'s' if len(trained) != 1 else ''} ({', '.join(trained)}): no test of this model's ΔGH*"
        )
    runs = df.attrs.get("runs", [])
    if len(runs) > 1:
        out["other runs in the store"] = "; ".join(
            f"{r['model_hash']}/{r['settings_hash']} ({r['rows']} rows)" for r in runs[1:]
        )
    if stats and stats.get("n"):
        out["DFT validation"] = (
            f"n = {stats['n']}, MAE {stats['mae']:.3f} eV, RMSE {stats['rmse']:.3f} eV, "
            f"inside 1σ {stats['within_1sigma']:.0%}, inside 2σ {stats['within_2sigma']:.0%}"
            + (
                f" (hosts whose DFT labels the model was not anchored or trained on; {stats['n_dft_fit']} more were)"
                if stats.get("n_dft_fit")
                else ""
            )
        )
    if stats and stats.get("n") and "dft_fmax" in df:
        unchecked = np.isfinite(df["dft_dg"].to_numpy(float)) & ~np.isfinite(df["dft_fmax"].to_numpy(float))
        if unchecked.any():
            out["DFT validation"] += (
                f"; {int(unchecked.sum())} validated row(s) carry no DFT force (validated before the "
                "geometry-failure check): `screen validate --reuse-only` with the same selection adds it"
            )
    if stats and stats.get("n_geometry_failure"):
        from screening.bench_model import MAX_H_FORCE, MAX_STATE_FORCE

        geo = df[geometry_failures(df) & np.isfinite(df["dft_dg"].to_numpy(float))]
        out["DFT geometry failures"] = (
            f"{stats['n_geometry_failure']} left out of the DFT statistics ({', '.join(map(str, geo['host']))}): "
            f"DFT puts more than {MAX_STATE_FORCE:g} eV/Å on an atom (or {MAX_H_FORCE:g} on H) at the model's "
            "geometry, so the model's minimum there is not DFT's and the error measures the geometry"
        )
    if stats and stats.get("n_host"):
        out["DFT validation, host minimum"] = (
            f"MAE {stats['mae_host']:.3f} eV against DFT's lowest labelled site of each host "
            f"({stats['n_host']} hosts; on {stats['n_other_site']} DFT's lowest site is not the model's: "
            "`screen validate --site-classes` labels the best site of each binding class)"
        )
    if stats and stats.get("n"):
        from .figures import candidate_check_text

        check = candidate_check_text(stats.get("candidates", {}))
        if check:
            out["DFT check of the candidates"] = check
    mm = mm_force_text(df)
    if mm:
        out["DFT force on the metal pair"] = mm
    bond = bond_line_text(df)
    if bond:
        out["DFT with the M–M bond relaxed"] = bond
    return out


def bond_line_text(df) -> str:
    """One line on the hosts validated with a bond line (``dft_dg_bond``, `screen validate --bond-line`): how
    far relaxing the M–M bond moves DFT ΔGH*, and the model's MAE against both DFT values on those hosts;
    '' when no row has one."""
    if "dft_dg_bond" not in df:
        return ""
    d = df[np.isfinite(df["dft_dg_bond"].to_numpy(float)) & np.isfinite(df["dft_dg"].to_numpy(float))]
    if d.empty:
        return ""
    shift = d["dft_dg_bond"].to_numpy(float) - d["dft_dg"].to_numpy(float)
    dg = d["dg"].to_numpy(float)
    mae0 = np.abs(dg - d["dft_dg"].to_numpy(float)).mean()
    mae1 = np.abs(dg - d["dft_dg_bond"].to_numpy(float)).mean()
    return (
        f"{len(d)} host(s): DFT ΔGH* moves by {shift.mean():+.3f} eV on average ({shift.min():+.3f} to "
        f"{shift.max():+.3f}) when the M–M bond of host and H* relaxes; the model's MAE on them is {mae0:.3f} eV "
        f"against the single points, {mae1:.3f} eV against the relaxed bond"
    )


def mm_force_text(df) -> str:
    """One line on the DFT force along the metal–metal axis at the model geometries of the validated hosts
    (``dft_mm_force_host``, ``dft_mm_force``: the larger in size of host and H*), or '' when none is stored."""
    from .validate import MM_FORCE_NOTE

    cols = [c for c in ("dft_mm_force_host", "dft_mm_force") if c in df]
    if not cols:
        return ""
    f = np.abs(df[cols].to_numpy(float))
    has = np.isfinite(f).any(axis=1)
    if not has.any():
        return ""
    worst = np.nanmax(f[has], axis=1)  # each kept row has a finite value
    hosts = df["host"].to_numpy()[has]
    big = worst > MM_FORCE_NOTE
    return (
        f"mean {worst.mean():.2f} eV/Å over {int(has.sum())} validated hosts (largest {worst.max():.2f}, "
        f"{hosts[int(worst.argmax())]}); above {MM_FORCE_NOTE:g} eV/Å on {int(big.sum())}: there the model's "
        "M–M distance is not DFT's and the single point carries that strain (docs/dft.md)"
    )


def render(
    df,
    figures: Mapping[str, Mapping[str, Path]],
    config: ReportConfig,
    db_path: str,
    stats: Mapping[str, Any] | None = None,
    title: str = "TM2@Nx-graphene HER screening report",
) -> str:
    """The whole HTML document as a string."""
    facts = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
        for k, v in summary(df, config, db_path, stats).items()
    )
    figs = "".join(
        f'<figure id="fig-{html.escape(name)}"><img alt="{html.escape(name)}" src="{_img(p["png"])}">'
        f"<figcaption>{html.escape(CAPTIONS.get(name, name))} "
        f"(<code>{html.escape(Path(p['svg']).name)}</code>)</figcaption></figure>\n"
        for name, p in figures.items()
    )
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1><p>Generated {stamp} by <code>screen report</code>. "
        f"ΔGH* in eV; σ is the "
        f"total predictive standard deviation. Click a column header to sort.</p>\n"
        f"<h2>Summary</h2><dl>{facts}</dl>\n<h2>Figures</h2>\n{figs}"
        f"<h2>Ranking</h2>\n{table_html(df, config)}\n{flags_html(df)}<script>{_JS}</script>\n</body></html>\n"
    )


def flags_html(df) -> str:
    """'<h2>Flags</h2>' with what each flag that occurs in ``df`` means and on how many hosts; '' when none."""
    from screening.flags import FLAG_HELP, counts

    n = counts(df["flags"].fillna("").astype(str)) if "flags" in df else {}
    if not n:
        return ""
    items = "".join(
        f"<dt><code>{html.escape(f)}</code> ({c} host{'s' if c != 1 else ''})</dt>"
        f"<dd>{html.escape(FLAG_HELP.get(f, ''))}</dd>"
        for f, c in n.items()
    )
    return f"<h2>Flags</h2><dl>{items}</dl>\n"


def write_html(
    path: str | os.PathLike,
    df,
    figures: Mapping[str, Mapping[str, Path]],
    config: ReportConfig,
    db_path: str,
    stats: Mapping[str, Any] | None = None,
) -> Path:
    """Render and write ``report.html`` atomically."""
    path = Path(path)
    atomic_write_text(path, render(df, figures, config, db_path, stats))
    return path


def build_report(
    db_path: str | os.PathLike,
    out: str | os.PathLike,
    config: ReportConfig = ReportConfig(),
    model_hash: str | None = None,
    settings_hash: str | None = None,
) -> dict[str, Any]:
    """Tables, figures and ``report.html`` for a results store, built in a temporary sibling folder and moved
    into ``out`` only when complete. Returns {"table": ranked DataFrame, "files": [paths], "stats": {...}}."""
    import shutil
    import tempfile

    from structures.common import InputError

    from .figures import make_figures, validation_stats
    from .tables import load_table, rank, write_tables

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out '{out}' exists and is not a folder; allowed: a folder path")
    df = rank(load_table(db_path, model_hash, settings_hash), config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp"))
    try:
        write_tables(df, tmp, config)
        figures = make_figures(df, tmp, config)
        stats = validation_stats(df, config.window)
        write_html(tmp / "report.html", df, figures, config, str(db_path), stats)
        out.mkdir(exist_ok=True)
        files = []
        for item in sorted(tmp.iterdir()):
            os.replace(item, out / item.name)
            files.append(out / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"table": df, "files": files, "stats": stats}
