"""Site-class anchoring (issue 10): what the H binds to, class offsets fitted by hand, and the screen's
site choice moving with them."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from screening.anchoring import fit_anchor, offset_for, predictive_sigma, site_class
from screening.dgh import DGConfig, EnergyStats, dg_from_stats


def test_site_class_is_the_element_kind_of_the_nearest_neighbour_with_minimum_image():
    cell = [[6.0, 0, 0], [0, 6.0, 0], [0, 0, 15.0]]
    a = Atoms("CNFeH", positions=[[0, 0, 5], [2, 0, 5], [4, 0, 5], [4, 0, 6.6]], cell=cell, pbc=[1, 1, 0])
    assert site_class(a) == "metal"
    a.positions[3] = [2.1, 0, 6.0]
    assert site_class(a) == "N"
    a.positions[3] = [5.9, 0, 6.0]  # 0.1 Å from C through the periodic boundary, 1.9 Å from Fe
    assert site_class(a) == "C"
    assert site_class(Atoms("CN", positions=[[0, 0, 0], [1, 0, 0]])) == "none"  # no H


def _rows():
    # residuals DFT - base: metal sites +0.1, +0.3 (hosts A2@1, B2@1); C sites -0.7 (A2@2), -0.9 (B2@2),
    # -0.8 (C2@1); an N site -0.5 on A2@1 as well (two triples on one host)
    return [
        {"host": "A2@1", "dft_de": 0.1, "base": 0.0, "site_class": "metal"},
        {"host": "A2@1", "dft_de": -0.5, "base": 0.0, "site_class": "N"},
        {"host": "B2@1", "dft_de": 0.3, "base": 0.0, "site_class": "metal"},
        {"host": "A2@2", "dft_de": -0.2, "base": 0.5, "site_class": "C"},
        {"host": "B2@2", "dft_de": -0.9, "base": 0.0, "site_class": "C"},
        {"host": "C2@1", "dft_de": -0.8, "base": 0.0, "site_class": "C"},
    ]


def test_class_offsets_pair_deviations_and_leave_one_host_out_by_hand():
    rows = _rows()
    fit = fit_anchor(rows, kappa=1.0, site_classes=True, kappa_class=1.0)
    host_res = {"A2@1": -0.2, "A2@2": -0.7, "B2@1": 0.3, "B2@2": -0.9, "C2@1": -0.8}
    b = np.mean(list(host_res.values()))
    assert fit["offset"] == pytest.approx(b) and fit["method"] == "site-class-pair"
    cls = {
        "metal": b + 2 / 3 * (0.2 - b),  # two hosts, mean 0.2
        "N": b + 1 / 2 * (-0.5 - b),
        "C": b + 3 / 4 * (-0.8 - b),
    }
    assert fit["class_offsets"] == pytest.approx(cls)
    # pair deviations: host means of (residual - class offset), pooled with kappa 1
    dev_host = {
        "A2@1": np.mean([0.1 - cls["metal"], -0.5 - cls["N"]]),
        "A2@2": -0.7 - cls["C"],
        "B2@1": 0.3 - cls["metal"],
        "B2@2": -0.9 - cls["C"],
        "C2@1": -0.8 - cls["C"],
    }
    devs = {
        "A2": 2 / 3 * np.mean([dev_host["A2@1"], dev_host["A2@2"]]),
        "B2": 2 / 3 * np.mean([dev_host["B2@1"], dev_host["B2@2"]]),
        "C2": 1 / 2 * dev_host["C2@1"],
    }
    assert fit["pair_deviations"] == pytest.approx(devs) and fit["pair_offsets"] == {}
    # σ per class: the class's leave-one-host-out residuals (hosts sorted; A2@1 has a metal and an N row)
    loho = fit["loho_residuals"]
    assert fit["class_sigma"]["C"] == pytest.approx(predictive_sigma([loho[2], loho[4], loho[5]], 3))
    assert fit["class_sigma"]["metal"] == pytest.approx(predictive_sigma([loho[0], loho[3]], 2))
    assert fit["class_sigma"]["N"] == pytest.approx(predictive_sigma([loho[1]], 1))
    assert all(fit["class_sigma_covered"][c] <= fit["class_sigma"][c] for c in cls)
    m = offset_for(fit, "A2@7", "metal")
    assert m == pytest.approx((cls["metal"] + devs["A2"], fit["class_sigma_covered"]["metal"]))
    assert offset_for(fit, "Z2@7", "C") == pytest.approx(
        (cls["C"], fit["class_sigma"]["C"])
    )  # unlabelled pair
    assert offset_for(fit, "Z2@7", None) == pytest.approx((b, fit["sigma_add"]))  # no class: global
    assert offset_for(fit, "AB@7", "N")[0] == pytest.approx(cls["N"] + 0.5 * (devs["A2"] + devs["B2"]))
    # leave C2@1 out: the C class then has A2@2 and B2@2 only
    others = [r for r in rows if r["host"] != "C2@1"]
    b_o = np.mean([v for h, v in host_res.items() if h != "C2@1"])
    c_o = b_o + 2 / 3 * (np.mean([-0.7, -0.9]) - b_o)
    assert fit_anchor(others, 1.0, site_classes=True)["class_offsets"]["C"] == pytest.approx(c_o)
    hosts = sorted(host_res)
    assert fit["loho_residuals"][hosts.index("C2@1") + 1] == pytest.approx(-0.8 - c_o)  # A2@1 has 2 rows
    assert fit["sigma_add"] == pytest.approx(predictive_sigma(fit["loho_residuals"], 5))
    # class offsets alone (no pair terms)
    g = fit_anchor(rows, kappa=None, site_classes=True)
    assert g["pair_deviations"] == {} and g["class_offsets"] == pytest.approx(cls)
    assert offset_for(g, "A2@1", "C") == pytest.approx((cls["C"], g["class_sigma"]["C"]))
    with pytest.raises(ValueError, match="site_class"):
        fit_anchor([{k: v for k, v in r.items() if k != "site_class"} for r in rows], site_classes=True)


def _stats(mean):
    mean = np.asarray(mean, dtype=float)
    return EnergyStats(mean=mean, samples=np.tile(mean, (4, 1)), var_aleatoric=np.zeros_like(mean))


def test_per_site_offsets_shift_each_site_before_the_lowest_is_picked():
    host, h2 = _stats([-100.0]), _stats([-6.0])
    states = _stats([-104.0, -103.6])  # site ΔE_H: -1.0 (on C), -0.6 (on a metal)
    cfg = DGConfig(correction=0.0)
    plain = dg_from_stats(host, states, ["top_X0", "top_M1"], h2, cfg)
    assert plain.best_site == "top_X0" and plain.dg == pytest.approx(-1.0)
    anchored = dg_from_stats(host, states, ["top_X0", "top_M1"], h2, cfg, anchor=(np.array([0.8, 0.1]), 0.3))
    assert anchored.best_site == "top_M1" and anchored.dg == pytest.approx(-0.5)
    assert anchored.site_dg == pytest.approx({"top_X0": -0.2, "top_M1": -0.5})
    assert anchored.dg_samples == pytest.approx(np.full(4, -0.5))
    assert anchored.dg_std_epistemic == pytest.approx(0.3)
    with pytest.raises(ValueError, match="one per H"):
        dg_from_stats(host, states, ["top_X0", "top_M1"], h2, cfg, anchor=(np.zeros(3), 0.0))
    # one σ per state: the chosen site's class's σ, not the widest class's
    per = dg_from_stats(
        host, states, ["top_X0", "top_M1"], h2, cfg, anchor=(np.array([0.8, 0.1]), np.array([0.9, 0.3]))
    )
    assert per.best_site == "top_M1" and per.dg_std_epistemic == pytest.approx(0.3)
    with pytest.raises(ValueError, match="σ must be"):
        dg_from_stats(host, states, ["top_X0", "top_M1"], h2, cfg, anchor=(0.0, np.zeros(3)))


def test_dg_anchor_gives_one_offset_per_state_for_a_site_class_anchoring():
    from types import SimpleNamespace

    from screening.dgh import dg_anchor

    fit = fit_anchor(_rows(), kappa=1.0, site_classes=True)
    post = SimpleNamespace(recal=SimpleNamespace(anchor=fit))
    offs, sigma = dg_anchor(post, "A2@9", ["C", "metal", "N"])
    assert offs == pytest.approx([offset_for(fit, "A2@9", c)[0] for c in ("C", "metal", "N")])
    assert sigma == pytest.approx([fit["class_sigma_covered"][c] for c in ("C", "metal", "N")])
    # no classes given: the global offset plus the pair's deviation
    assert dg_anchor(post, "A2@9")[0] == pytest.approx(fit["offset"] + fit["pair_deviations"]["A2"])


def test_bootstrap_mae_interval():
    from screening.bench_anchor import bootstrap_mae_ci

    lo, hi = bootstrap_mae_ci([0.3] * 5)
    assert lo == pytest.approx(0.3) and hi == pytest.approx(0.3)  # no spread, no width
    e = np.random.default_rng(3).exponential(0.4, size=10)
    lo, hi = bootstrap_mae_ci(e)
    assert lo < e.mean() < hi and hi - lo > 0.1
    lo40, hi40 = bootstrap_mae_ci(np.tile(e, 4))  # four times the hosts: about half the width
    assert 0.35 < (hi40 - lo40) / (hi - lo) < 0.7
    assert bootstrap_mae_ci(e) == (lo, hi)  # seeded
    assert all(np.isnan(bootstrap_mae_ci([])))


def test_paired_host_difference_is_tighter_than_either_mae_and_ties_are_not_wins():
    from screening.bench_anchor import bootstrap_mae_ci, paired_host_difference
    from structures.common import InputError

    rng = np.random.default_rng(5)
    hosts = [f"M{i}2@4Na" for i in range(10)]
    a = dict(zip(hosts, rng.normal(0.2, 0.4, 10)))
    # b: the same host-to-host errors, each 0.05 eV smaller in magnitude, plus a little noise
    b = {h: np.sign(e) * max(abs(e) - 0.05, 0.0) + rng.normal(0, 0.005) for h, e in a.items()}
    r = paired_host_difference(a, b)
    assert r["n"] == 10 and r["diff"] == pytest.approx(r["mae_b"] - r["mae_a"])
    assert r["lo"] < r["diff"] < r["hi"] < 0 and r["p_better"] > 0.95
    lo_a, hi_a = bootstrap_mae_ci(np.abs(list(a.values())))
    assert r["hi"] - r["lo"] < 0.2 * (hi_a - lo_a)  # the paired interval is far tighter than one MAE's
    # the same network evaluated twice (a constant 0.1 meV shift, e.g. a refitted H2): a tie, not a win
    r = paired_host_difference(a, {h: e - 1e-4 * np.sign(e) for h, e in a.items()})
    assert r["p_better"] == 0.0 and abs(r["diff"]) < 1e-3
    # only the hosts both evaluated count; fewer than two is an input error
    assert paired_host_difference(a, {**b, "X2@2Na": 5.0})["n"] == 10
    with pytest.raises(InputError, match="1 host"):
        paired_host_difference(a, {hosts[0]: 0.1})


def test_host_level_takes_the_lowest_site_of_dft_and_of_each_variant():
    from screening.bench_anchor import host_level, host_table

    rows = [  # host A: DFT lowest at the metal site; the base model picks the C site, "site" the metal one
        {
            "host": "A2@1",
            "name": "A2@1+H@top_X0",
            "site_class": "C",
            "dft_de": 0.5,
            "base": -0.9,
            "site": -0.1,
        },
        {
            "host": "A2@1",
            "name": "A2@1+H@top_M1",
            "site_class": "metal",
            "dft_de": -0.2,
            "base": -0.3,
            "site": -0.2,
        },
        {
            "host": "B2@1",
            "name": "B2@1+H@top_M1",
            "site_class": "metal",
            "dft_de": 0.1,
            "base": 0.3,
            "site": 0.2,
        },
    ]
    summary, per_host = host_level(rows, ["base", "site"])
    assert per_host[0]["dft_de"] == -0.2 and per_host[0]["dft_site"] == "A2@1+H@top_M1"
    assert per_host[0]["base"] == -0.9 and per_host[0]["base_site"] == "A2@1+H@top_X0"
    assert summary["base"]["mae"] == pytest.approx((0.7 + 0.2) / 2) and summary["base"]["site_right"] == 0.0
    assert summary["site"]["mae"] == pytest.approx((0.0 + 0.1) / 2) and summary["site"]["site_right"] == 1.0
    assert summary["site"]["n"] == 2 and summary["site"]["n_multi"] == 1
    # two hosts, errors 0.0 and 0.1: a bootstrap mean lies in [0, 0.1], each end reached by some resample
    assert summary["site"]["mae_ci"] == pytest.approx((0.0, 0.1))
    assert "| site | 2 | 0.050 | 0.00–0.10 |" in host_table(summary, per_host)
    assert host_table(*host_level(rows[2:], ["base"])) == ""  # one site per host: no table
    # site-complete: only A (a metal and a C site); B has one metal site, so its DFT minimum is a bound
    assert [h["complete"] for h in per_host] == [True, False]
    assert summary["base"]["n_complete"] == 1 and summary["base"]["mae_complete"] == pytest.approx(0.7)
    assert summary["site"]["mae_complete"] == pytest.approx(0.0)
    # two sites of one class do not make a host complete, and are footnoted in the table
    same = [dict(r, host="C2@1", site_class="N") for r in rows[:2]]
    s2, h2 = host_level(same, ["base"])
    assert not h2[0]["complete"] and s2["base"]["n_complete"] == 0
    assert "| C2@1 ¹ |" in host_table(s2, h2)
