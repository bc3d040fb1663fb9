"""Reports: ranking table, figures, self-contained HTML (checked in headless chromium), selections, bad input.

The fixture results store is written with the real ``screening.store.Store`` writer (structures, H2 reference,
ΔG rows); metals are EMT-capable so that ``test_reports_dft`` can validate it with a cheap engine.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from cli import main

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
FIGURES = ("ranked", "heatmap_dg", "heatmap_sigma", "volcano", "trend_metal", "trend_motif")


def make_results_db(
    path,
    metals=("Cu", "Ni", "Pd", "Ag"),
    motifs=("0Na", "3Nb", "6Na"),
    hetero=(("Cu", "Ni"),),
    seed=0,
    supercell="4x4",
    all_sites=False,
):
    """A results store like `screen run` writes: relaxed host and host+H* rows, the H2 reference, ΔG rows.

    Geometries are the built ones, slightly rattled; ΔG values and σ are random (seeded). The H* rows are
    the first site's (the ΔG row's best site) or, with ``all_sites``, every candidate site's."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from screening.dgh import h2_molecule
    from screening.relax import RelaxResult
    from screening.store import Store
    from structures import keys as SK
    from structures.host import build_host
    from structures.sites import add_h, h_sites

    rng = np.random.default_rng(seed)
    mh, rh, sh = "mtest", "rtest", "stest"

    def relaxed(atoms, i):
        r = atoms.copy()
        r.positions += rng.normal(0, 0.02, r.positions.shape)
        e = float(rng.normal(-100, 5))
        r.calc = SinglePointCalculator(r, energy=e, forces=np.zeros((len(r), 3)))
        return RelaxResult(
            index=i, atoms=r, energy=e, fmax=0.01, n_steps=10, status="converged", max_displacement=0.05
        )

    items, dg_rows = [], []
    for m1, m2 in [(m, m) for m in metals] + list(hetero):
        for motif in motifs:
            host = build_host(m1, motif, metal2=m2, supercell=supercell)
            sites = h_sites(host)
            site = sites[0]
            items.append((host, relaxed(host, len(items)), []))
            for st in sites if all_sites else sites[:1]:
                hh = add_h(host, st)
                items.append((hh, relaxed(hh, len(items)), []))
            dg = float(rng.normal(0.1, 0.5))
            epi, ale = float(rng.uniform(0.02, 0.25)), float(rng.uniform(0.01, 0.08))
            std = float(np.hypot(epi, ale))
            flags = ["high_variance"] if (std > 0.15 or abs(dg) < 2 * std) else []
            dg_rows.append(
                {
                    "uid": f"dg-{host.info[SK.NAME]}",
                    "host": host.info[SK.NAME],
                    "metal": m1,
                    "metal2": m2,
                    "motif": motif,
                    "n_N": host.info[SK.N_N],
                    "n_sites": host.info[SK.N_SITES],
                    "supercell": supercell,
                    "best_site": site.label,
                    "dg": dg,
                    "dg_std": std,
                    "dg_std_epistemic": epi,
                    "dg_std_aleatoric": ale,
                    "site_agreement": 1.0,
                    "e_form": float(rng.normal(0, 1)),
                    "e_form_std": 0.1,
                    "e_form_std_epistemic": 0.08,
                    "e_form_std_aleatoric": 0.06,
                    "aggregates": False,
                    "converged": True,
                    "flags": ",".join(flags),
                    **{f"flag_{f}": True for f in flags},
                    "n_samples": 8,
                    "correction": 0.24,
                    "e_host": -100.0,
                    "e_host_h": -103.0,
                    "e_h2": -6.7,
                    "model_hash": mh,
                    "relax_hash": rh,
                    "settings_hash": sh,
                    "code_version": "v0.1.0",
                }
            )
    with Store(path) as st:
        st.write_run(mh, sh, "model.pt", {"fixture": True})
        st.write_structures(items, mh, rh)
        h2 = h2_molecule()
        st.write_reference(h2, relaxed(h2, 0), mh, rh, "h2")
        st.write_dg_rows(dg_rows)
    return Path(path)


@pytest.fixture(scope="module")
def results_db(tmp_path_factory):
    return make_results_db(tmp_path_factory.mktemp("store") / "results.db")


@pytest.fixture(scope="module")
def report_dir(results_db, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report"
    assert main(["report", "--db", str(results_db), "--out", str(out)]) == 0
    return out


def _table_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------------------------------------
def test_report_writes_every_figure_and_sorted_tables(report_dir, results_db):
    from screening.store import load_results

    for name in FIGURES:
        png, svg = report_dir / f"{name}.png", report_dir / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert b"<svg" in svg.read_bytes()[:2000], name
    # no DFT data yet: no parity or calibration figure
    assert not (report_dir / "parity.png").exists() and not (report_dir / "calibration.png").exists()
    rows = _table_rows(report_dir / "ranking.csv")
    store = load_results(results_db)
    assert len(rows) == len(store) == 15
    abs_dg = [abs(float(r["dg"])) for r in rows]
    assert abs_dg == sorted(abs_dg)
    assert [int(r["rank"]) for r in rows] == list(range(1, 16))
    by_host = store.set_index("host")
    for r in rows:  # values and provenance are the store's, not re-computed
        assert float(r["dg"]) == pytest.approx(by_host.loc[r["host"], "dg"], rel=1e-5)
        assert float(r["dg_std"]) == pytest.approx(by_host.loc[r["host"], "dg_std"], rel=1e-5)
        assert r["model_hash"] == "mtest" and r["settings_hash"] == "stest"
        assert r["flags"] == by_host.loc[r["host"], "flags"]
    md = (report_dir / "ranking.md").read_text()
    md_hosts = [line.split("|")[2].strip() for line in md.splitlines() if re.match(r"\| \d+ \|", line)]
    assert md_hosts == [r["host"] for r in rows]


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.imgs, self.links, self.scripts, self.ths = [], [], [], [], []
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tbody":
            self._in_body = True
        if tag == "tr" and self._in_body:
            self.rows.append(a.get("data-host"))
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "th":
            self.ths.append(a.get("data-col"))
        if tag in ("link", "script") and (a.get("src") or a.get("href")):
            self.links.append(a.get("src") or a.get("href"))

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False


def test_html_is_self_contained_and_lists_every_row(report_dir):
    text = (report_dir / "report.html").read_text()
    p = _Collect()
    p.feed(text)
    hosts = [r["host"] for r in _table_rows(report_dir / "ranking.csv")]
    assert p.rows == hosts
    assert len(p.imgs) == len(FIGURES) and all(s.startswith("data:image/png;base64,") for s in p.imgs)
    assert p.links == []  # no external script or stylesheet
    assert not re.search(r"(src|href)=\"https?:", text)
    assert {"dg", "dg_std", "flags", "model_hash", "p_active"} <= set(p.ths)


def _dump_dom(url: str, tmp_path: Path) -> str:
    if CHROMIUM is None:
        pytest.skip(
            "Debian's chromium is not installed (apt-get install chromium); the browser check needs it"
        )
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--dump-dom",
        url,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.mark.browser
def test_browser_renders_table_and_sorts_it(report_dir, tmp_path):
    rows = _table_rows(report_dir / "ranking.csv")
    dom = _dump_dom((report_dir / "report.html").as_uri() + "#sort=-dg_std", tmp_path)
    p = _Collect()
    p.feed(dom)
    assert len(p.rows) == len(rows) and len(p.imgs) == len(FIGURES)
    # the inline script ran: rows are now in descending σ order and the header is marked
    want = [r["host"] for r in sorted(rows, key=lambda r: -float(r["dg_std"]))]
    assert p.rows == want
    assert re.search(r'<th data-col="dg_std"[^>]*class="desc"', dom)


# ----------------------------------------------------------------------------------------------------------
def test_volcano_model_and_probabilities():
    from reports.tables import KT_300K, log_i0, log_i0_expected, p_active

    assert log_i0(0.0) == pytest.approx(-math.log10(2.0))
    x = np.linspace(-2, 2, 81)
    np.testing.assert_allclose(log_i0(x), log_i0(-x))  # both branches: the same |ΔG| law
    # far from the top each branch is a straight line of slope -1/(kT ln 10)
    slope = (log_i0(1.5) - log_i0(1.0)) / 0.5
    assert slope == pytest.approx(-1.0 / (KT_300K * math.log(10.0)), rel=1e-6)
    assert np.isfinite(log_i0(50.0))
    # posterior-mean activity: Monte Carlo agrees; σ -> 0 recovers the point value
    rng = np.random.default_rng(0)
    for mu, s in ((0.3, 0.1), (-0.5, 0.3)):
        mc = np.log10(np.mean(10 ** log_i0(rng.normal(mu, s, 400_000))))
        assert log_i0_expected(np.array([mu]), np.array([s]))[0] == pytest.approx(mc, abs=0.02)
        z = rng.normal(mu, s, 400_000)
        assert p_active(np.array([mu]), np.array([s]), 0.2)[0] == pytest.approx(
            np.mean(np.abs(z) < 0.2), abs=3e-3
        )
    assert log_i0_expected(np.array([0.4]), np.array([1e-9]))[0] == pytest.approx(log_i0(0.4), abs=1e-6)
    assert p_active(np.array([0.1, 0.3]), np.array([0.0, 0.0]), 0.2).tolist() == [1.0, 0.0]


def test_selections(results_db):
    from reports.tables import ReportConfig, load_table, rank, select
    from structures.common import InputError

    df = rank(load_table(results_db))
    assert list(select(df, "top:3")["host"]) == list(df["host"][:3])
    names = [df["host"][5], df["host"][1]]
    assert list(select(df, "id:" + ",".join(names))["host"]) == names
    cfg = ReportConfig()
    unc = select(df, "uncertain", cfg)
    dg, s = df["dg"].to_numpy(), df["dg_std"].to_numpy()
    expect = {
        h
        for h, d, si, f in zip(df["host"], dg, s, df["flag_high_variance"])
        if f or (d - 2 * si < 0.2 < d + 2 * si) or (d - 2 * si < -0.2 < d + 2 * si)
    }
    assert set(unc["host"]) == expect and len(expect) > 0
    amb = (unc["p_active"] - 0.5).abs().to_numpy()
    assert np.all(np.diff(amb) >= -1e-12)  # most ambiguous first
    assert len(select(df, "uncertain", cfg, limit=2)) == 2
    # flag:NAME: the rows carrying that flag, in ranking order; an unknown flag is refused
    flagged = [h for h, f in zip(df["host"], df["flags"].fillna("")) if "high_variance" in str(f).split(",")]
    assert flagged and list(select(df, "flag:high_variance")["host"]) == flagged
    for bad in ("best", "top:x", "top:0", "id:Xx2@9Nq", "", "flag:bogus", "flag:"):
        with pytest.raises(InputError):
            select(df, bad)
    # BALD: ½ ln(1 + σ_ep²/σ_al²) by hand, largest first; excluded hosts never come back
    ep, al = df["dg_std_epistemic"].to_numpy(float), df["dg_std_aleatoric"].to_numpy(float)
    score = dict(zip(df["host"], 0.5 * np.log1p((ep / al) ** 2)))
    b = select(df, "bald")
    assert list(b["host"]) == sorted(score, key=lambda h: -score[h])
    top = b["host"][0]
    assert top not in set(select(df, "bald", exclude=[top])["host"])
    per = select(df, "bald:per-metal")
    pairs = list(zip(per["metal"], per["metal2"]))
    assert len(pairs) == len(set(pairs)) == len(set(zip(df["metal"], df["metal2"])))
    for m1, m2, h in zip(per["metal"], per["metal2"], per["host"]):  # each pair's best host
        same = df[(df["metal"] == m1) & (df["metal2"] == m2)]["host"]
        assert score[h] == max(score[x] for x in same)
    with pytest.raises(InputError):
        select(df, "id:" + top, exclude=[top])
    # random orders: seeded (the same twice), every finite row once; per metal pair one host of each pair
    r1, r2 = select(df, "random"), select(df, "random")
    assert list(r1["host"]) == list(r2["host"]) and sorted(r1["host"]) == sorted(df["host"])
    assert list(r1["host"]) != list(df["host"])
    rp = select(df, "random:per-metal", exclude=[top])
    pairs = list(zip(rp["metal"], rp["metal2"]))
    assert len(pairs) == len(set(pairs)) and top not in set(rp["host"])
    assert set(pairs) == set(zip(df[df["host"] != top]["metal"], df[df["host"] != top]["metal2"]))


def test_bad_input_is_one_line(tmp_path, capsys, results_db):
    from screening.store import Store

    empty = tmp_path / "empty.db"
    with Store(empty) as st:
        st.write_run("m", "s", "x", {})
    cases = [
        ["report", "--db", str(empty), "--out", str(tmp_path / "r")],
        ["report", "--db", str(tmp_path / "missing.db"), "--out", str(tmp_path / "r")],
        ["report", "--db", str(results_db), "--out", str(tmp_path / "r"), "--preset", "fancy"],
        ["export", "--db", str(results_db), "--select", "worst", "--out", str(tmp_path / "e")],
        [
            "export",
            "--db",
            str(results_db),
            "--select",
            "top:1",
            "--format",
            "cp2k",
            "--out",
            str(tmp_path / "e"),
        ],
        ["validate", "--db", str(results_db), "--engine", "nonsense"],
        ["validate", "--db", str(results_db), "--engine", "emt", "--select", "id:Nope"],
    ]
    for argv in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "error:" in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "r").exists() and not (tmp_path / "e").exists()


def test_hosts_that_fitted_the_anchoring_are_no_test(tmp_path):
    """A run whose model carries a DFT anchoring (screen anchor): its anchoring hosts are marked in the
    table, drawn apart in the parity plot and left out of the validation statistics; a model file replaced
    since the run marks nothing."""
    import ase.db
    import torch

    from potentials import checkpoint
    from potentials.model import build_model, preset
    from reports.figures import parity, validation_stats
    from reports.tables import ReportConfig, dft_fit_hosts, load_table

    cfg = preset("tiny", elements=("H", "C", "N", "Cu", "Ni"), avg_num_neighbors=6.0, e0s=(0.0,) * 5)
    torch.manual_seed(0)
    model_path = tmp_path / "anchored.pt"
    anchor = {"offset": 0.5, "sigma_add": 0.3, "hosts": ["Cu2@3Nb", "Ni2@6Na"]}
    digest = checkpoint.save(model_path, build_model(cfg), cfg, extra={"recalibration": {"anchor": anchor}})
    db_path = make_results_db(tmp_path / "results.db", metals=("Cu", "Ni"), motifs=("3Nb", "6Na"), hetero=())
    mh = "m" + digest[:16]
    db = ase.db.connect(str(db_path), type="db")
    for row in list(db.select()):  # the fixture's run as if this model had written it
        if row.get("model_hash") == "mtest":
            db.update(row.id, model_hash=mh)
    db.update(next(db.select(kind="run")).id, model_path=str(model_path))
    assert dft_fit_hosts(db_path, mh) == {"Cu2@3Nb", "Ni2@6Na"}

    df = load_table(db_path)
    assert sorted(df.loc[df["dft_fit"], "host"]) == ["Cu2@3Nb", "Ni2@6Na"]
    from reports.html import summary
    from reports.tables import anchor_text, rank

    facts = summary(rank(df), ReportConfig(), str(db_path))
    assert facts["DFT anchoring of ΔGH*"].startswith("one offset, +0.500 eV; σ_anchor 0.300 eV")
    assert "2 DFT hosts (Cu2@3Nb, Ni2@6Na)" in facts["DFT anchoring of ΔGH*"]
    classes = dict(anchor, class_offsets={"metal": 0.05, "C": 1.0}, class_sigma={"C": 0.8})
    assert "H on C +1.000 eV (σ 0.800), H on metal +0.050 eV" in anchor_text(classes)
    assert anchor_text(None) == ""
    df["dft_dg"] = df["dg"] + np.where(df["dft_fit"], 0.0, 0.2)  # held-out hosts 0.2 eV off
    st = validation_stats(df)
    assert st["n"] == 2 and st["n_dft_fit"] == 2 and st["mae"] == pytest.approx(0.2)
    assert "mae_host" not in st  # no validate --site-classes yet
    files = parity(df, tmp_path / "fig", ReportConfig())
    assert files["png"].stat().st_size > 0
    # one held-out host whose DFT is 1 eV lower at another labelled site: the host-minimum MAE counts it
    held = np.flatnonzero(~df["dft_fit"].to_numpy())
    host_min = df["dft_dg"].to_numpy(float).copy()
    host_min[held[0]] -= 1.0
    df["dft_dg_host"] = host_min
    df["dft_site_host"] = df["best_site"]
    df.loc[held[0], "dft_site_host"] = "elsewhere"
    st = validation_stats(df)
    assert st["mae"] == pytest.approx(0.2) and st["n_host"] == 2 and st["n_other_site"] == 1
    assert st["mae_host"] == pytest.approx((0.8 + 0.2) / 2)  # model 0.2 below DFT, 0.8 above its minimum
    assert parity(df, tmp_path / "fig2", ReportConfig())["png"].stat().st_size > 0

    torch.manual_seed(1)  # other weights, same anchoring, under the same path: the run's model is gone
    checkpoint.save(model_path, build_model(cfg), cfg, extra={"recalibration": {"anchor": anchor}})
    assert dft_fit_hosts(db_path, mh) == set()


def test_parity_names_only_hosts_whose_dft_lies_outside_2_sigma(tmp_path):
    """The parity figure names the hosts whose DFT ΔGH* lies outside the model's 2σ bar, and its legend
    explains the names only when there are some."""
    from reports.figures import parity
    from reports.tables import ReportConfig, load_table

    df = load_table(make_results_db(tmp_path / "r.db", metals=("Cu", "Ni"), motifs=("3Nb",), hetero=()))
    df["dft_dg"] = df["dg"]
    svg = parity(df, tmp_path / "in", ReportConfig())["svg"].read_text()
    assert "named: DFT outside" not in svg and "Cu2@3Nb" not in svg
    df.loc[df["host"] == "Cu2@3Nb", "dft_dg"] += 10.0 * df["dg_std"].max() + 1.0
    svg = parity(df, tmp_path / "out", ReportConfig())["svg"].read_text()
    assert "named: DFT outside" in svg and "Cu2@3Nb" in svg and "Ni2@3Nb" not in svg


def test_hosts_a_model_was_trained_on_with_dft_are_no_test(tmp_path):
    """A model fine-tuned on DFT labels (checkpoint provenance ``dft_hosts``, no anchoring): those hosts
    are marked like anchoring hosts, named in the summary and left out of the validation statistics."""
    import ase.db
    import torch

    from potentials import checkpoint
    from potentials.model import build_model, preset
    from reports.figures import validation_stats
    from reports.html import summary
    from reports.tables import ReportConfig, dft_fit_hosts, load_table, rank

    cfg = preset("tiny", elements=("H", "C", "N", "Cu", "Ni"), avg_num_neighbors=6.0, e0s=(0.0,) * 5)
    torch.manual_seed(0)
    model_path = tmp_path / "finetuned.pt"
    digest = checkpoint.save(model_path, build_model(cfg), cfg, extra={checkpoint.DFT_HOSTS: ["Ni2@3Nb"]})
    db_path = make_results_db(tmp_path / "results.db", metals=("Cu", "Ni"), motifs=("3Nb", "6Na"), hetero=())
    mh = "m" + digest[:16]
    db = ase.db.connect(str(db_path), type="db")
    for row in list(db.select()):
        if row.get("model_hash") == "mtest":
            db.update(row.id, model_hash=mh)
    db.update(next(db.select(kind="run")).id, model_path=str(model_path))
    assert dft_fit_hosts(db_path, mh) == {"Ni2@3Nb"}
    df = load_table(db_path)
    assert sorted(df.loc[df["dft_fit"], "host"]) == ["Ni2@3Nb"]
    df["dft_dg"] = df["dg"] + np.where(df["dft_fit"], 1.0, -0.1)  # the trained host would skew the MAE
    st = validation_stats(df)
    assert st["n"] == len(df) - 1 and st["n_dft_fit"] == 1 and st["mae"] == pytest.approx(0.1)
    facts = summary(rank(df), ReportConfig(), str(db_path), st)
    assert facts["trained on DFT"].startswith("1 host (Ni2@3Nb)")
    assert "1 more were" in facts["DFT validation"]


def test_a_dft_geometry_failure_is_named_and_left_out_of_the_statistics(tmp_path):
    """A validated host whose DFT single point puts more than MAX_STATE_FORCE on an atom (or MAX_H_FORCE on
    H) at the model's geometry (v0.5.1 at Rh2@2Nd: 19 eV/Å, ΔGH* +5 eV) is left out of the validation
    statistics, of the parity axes and of the ranking's DFT values, and named in the summary."""
    from reports.figures import _host_value, geometry_failures, parity, validation_stats
    from reports.html import summary
    from reports.tables import ReportConfig, load_table, rank
    from screening.bench_model import MAX_H_FORCE, MAX_STATE_FORCE

    db_path = make_results_db(tmp_path / "r.db", metals=("Cu", "Ni", "Co"), motifs=("3Nb",), hetero=())
    df = load_table(db_path)
    df["dft_dg"] = df["dg"] + 0.1
    df["dft_fmax"] = 3.0
    df["dft_h_force"] = 1.0
    assert not geometry_failures(df).any() and validation_stats(df)["n"] == 3
    bad = df["host"] == "Cu2@3Nb"
    df.loc[bad, "dft_dg"] = df.loc[bad, "dg"] + 5.0
    df.loc[bad, "dft_fmax"] = MAX_STATE_FORCE + 4.0
    assert list(geometry_failures(df)) == list(bad)
    st = validation_stats(df)
    assert st["n"] == 2 and st["mae"] == pytest.approx(0.1) and st["n_geometry_failure"] == 1
    assert (
        np.isnan(_host_value(df)[bad.to_numpy()]).all()
        and np.isfinite(_host_value(df)[~bad.to_numpy()]).all()
    )
    facts = summary(rank(df), ReportConfig(), str(db_path), st)
    assert facts["DFT geometry failures"].startswith("1 left out of the DFT statistics (Cu2@3Nb)")
    svg = parity(df, tmp_path / "fig", ReportConfig())["svg"].read_text()
    assert "left out, DFT force" in svg and "Cu2@3Nb" in svg
    # the force on H alone is a failure too; no forces stored (nan) is none
    df.loc[bad, "dft_fmax"] = 3.0
    df.loc[bad, "dft_h_force"] = MAX_H_FORCE + 1.0
    assert validation_stats(df)["n_geometry_failure"] == 1
    df["dft_fmax"] = np.nan
    df["dft_h_force"] = np.nan
    st = validation_stats(df)
    assert st["n"] == 3 and "n_geometry_failure" not in st
    # rows validated before the check carry no force: the summary says how to add it
    facts = summary(rank(df), ReportConfig(), str(db_path), st)
    assert "3 validated row(s) carry no DFT force" in facts["DFT validation"]


def test_the_report_explains_the_flags_that_occur(tmp_path):
    from reports.html import flags_html
    from reports.tables import load_table
    from screening.flags import FLAG_HELP

    df = load_table(make_results_db(tmp_path / "r.db", metals=("Cu", "Ni"), motifs=("3Nb",), hetero=()))
    df["flags"] = ["pair_stretched,h_migrated", "h_migrated"]
    text = flags_html(df)
    assert "<code>h_migrated</code> (2 hosts)" in text and "<code>pair_stretched</code> (1 host)" in text
    assert "spurious minimum" in text and "aggregates" not in text
    assert text.index("pair_stretched") < text.index("h_migrated")  # FLAG_NAMES order
    assert FLAG_HELP["aggregates"] not in text
    df["flags"] = ""
    assert flags_html(df) == ""


def test_of_two_runs_as_large_the_one_written_last_is_reported(tmp_path):
    """A store re-run under new settings holds two runs of the same size: the table takes the newer one
    (whatever order the groupby returns), and lists both."""
    import ase.db

    from reports.tables import load_table

    db_path = make_results_db(tmp_path / "r.db", metals=("Cu", "Ni"), motifs=("3Nb",), hetero=())
    db = ase.db.connect(str(db_path), type="db")
    for settings in ("aaa_mid", "zzz_newest"):  # written after 'stest'; the newest sorts last by name
        for row in list(db.select(kind="dg", settings_hash="stest")):
            kv = dict(row.key_value_pairs, settings_hash=settings, uid=f"{row.uid}-{settings}")
            db.write(ase.Atoms(), data=row.get("data") or {}, **kv)
    df = load_table(db_path)
    assert set(df["settings_hash"]) == {"zzz_newest"} and len(df) == 2
    assert [r["settings_hash"] for r in df.attrs["runs"]] == ["zzz_newest", "aaa_mid", "stest"]


def test_candidate_check_counts_what_dft_confirms_of_the_top_list(tmp_path):
    """The report's check of the candidates against DFT: of the hosts the model puts inside the window, how
    many DFT confirms; of those DFT puts inside, how many the model's point list and its 2σ list hold. Hosts
    whose DFT fitted the model and geometry failures at the model's site are no test."""
    from reports.figures import candidate_check, candidate_check_text, validation_stats
    from reports.html import summary
    from reports.tables import ReportConfig, load_table, rank
    from screening.bench_model import MAX_STATE_FORCE

    db_path = make_results_db(tmp_path / "r.db", metals=("Cu", "Ni", "Co", "Fe"), motifs=("3Nb",), hetero=())
    df = load_table(db_path)
    assert candidate_check(df, 0.2) == {"n_hosts": 0}  # nothing validated
    by = {h: i for i, h in enumerate(df["host"])}
    df["dg"], df["dg_std"], df["dft_dg"] = 0.0, 0.1, np.nan
    rows = {  # host: (model ΔGH*, DFT ΔGH*)
        "Cu2@3Nb": (0.05, 0.10),  # listed, confirmed
        "Ni2@3Nb": (-0.10, 0.60),  # listed, not confirmed
        "Co2@3Nb": (0.35, -0.05),  # DFT-active, outside the point list, inside 0.2 + 2σ
        "Fe2@3Nb": (0.90, 0.00),  # DFT-active, missed by both lists
    }
    for h, (m, d) in rows.items():
        df.loc[by[h], ["dg", "dft_dg"]] = m, d
    c = candidate_check(df, 0.2)
    assert (c["n_hosts"], c["n_listed"], c["n_confirmed"], c["confirmed"]) == (4, 2, 1, ["Cu2@3Nb"])
    assert c["unconfirmed"] == ["Ni2@3Nb"]
    assert (c["n_dft_active"], c["n_found"], c["n_found_sigma"], c["n_sigma_list"]) == (3, 1, 2, 3)
    assert c["missed"] == ["Fe2@3Nb"]
    text = candidate_check_text(c)
    assert "DFT confirms 1 (Cu2@3Nb)" in text and "missed by both: Fe2@3Nb" in text
    # a narrower window confirms nothing; a geometry failure at the model's site and a DFT-fitted host drop out
    assert candidate_check(df, 0.02)["n_listed"] == 0
    df["dft_fmax"] = 1.0
    df.loc[by["Fe2@3Nb"], "dft_fmax"] = MAX_STATE_FORCE + 1.0
    df["dft_fit"] = df["host"] == "Ni2@3Nb"
    c = candidate_check(df, 0.2)
    assert (c["n_hosts"], c["n_listed"], c["n_dft_active"], c["missed"]) == (2, 1, 2, [])
    facts = summary(rank(df), ReportConfig(), str(db_path), validation_stats(df))
    assert facts["DFT check of the candidates"].startswith("of the 1 validated held-out host(s)")
