"""`screen bench anchor` (issue 10) on a toy two-fidelity world: biased EMT stands in for SevenNet-0
(pre-training labels), EMT written as GPAW pw500 rows stands in for plane-wave DFT."""

from __future__ import annotations

import json

import ase.db
import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT

from cli import main
from potentials.bayes.fit import fit_posterior
from potentials.checkpoint import load, load_model
from potentials.model import ModelConfig
from potentials.testing import emt_low_fidelity, tiny_train_configs
from potentials.train import train
from screening import labelling as L
from structures.motifs import resolve_motifs

torch.set_num_threads(1)


def _queue():
    return L.build_queue(
        ["Cu", "Ni"], resolve_motifs("4Na,5Na"), supercell="4x4", with_h=True, sites=["top_M1"], h2=True
    )


def _emt(frames):
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for a in frames:
        b = a.copy()
        b.calc = EMT()
        b.calc = SinglePointCalculator(b, energy=b.get_potential_energy(), forces=b.get_forces())
        out.append(b)
    return out


@pytest.fixture(autouse=True)
def _keep_every_triple(monkeypatch):
    """EMT on the builder's geometries puts large forces on H; these stand-in labels are not about the
    H-force rule of dft_triples (tests/test_labelling.py tests it), so keep every triple here."""
    import screening.bench_model

    monkeypatch.setattr(screening.bench_model, "MAX_H_FORCE", float("inf"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("anchor")
    q = _queue()
    rng = np.random.default_rng(0)
    rattled = []
    for a in q:
        for _ in range(3):
            b = a.copy()
            b.positions += rng.normal(0, 0.04, b.positions.shape)
            rattled.append(b)
    low = emt_low_fidelity(_emt(list(q) + rattled))
    from ase.io import write

    write(tmp / "pretrain.extxyz", low[:6])
    m, t = tiny_train_configs(epochs=8)
    base = train(low, low[:6], m, t, tmp / "base", progress=False)
    _, payload = load_model(base)
    post_path = fit_posterior(
        "laplace",
        low,
        low[:6],
        ModelConfig.from_dict(payload["config"]),
        "tiny",
        tmp / "post",
        train_config=t,
        laplace_only=True,
        init_from=base,
    )[1]
    # the "DFT" store: EMT energies and forces as GPAW pw500 rows on validation geometries
    gp, s = L.get_engine("gpaw"), L.PRESETS["pw500"]
    db_path = tmp / "labels.db"
    db = ase.db.connect(str(db_path))
    for a in _emt(q):
        b = a.copy()
        b.info.update(frame="dft_validation")
        res = {
            "converged": True,
            "status": "ok",
            "energy": a.get_potential_energy(),
            "forces": a.get_forces(),
            "wall_s": 600.0,
            "attempts": [{"magmom_scale": 1.0, "converged": True}],
            "n_scf": 20,
        }
        L.write_label_row(db, b, L.label_key(b, gp, s), "gpaw", "gpaw test", {"physics": gp.physics(s)}, res)
    return tmp, str(post_path), str(db_path)


def test_anchor_bench_keeps_heldout_hosts_out_and_fits_the_dft_labels(world, tmp_path, monkeypatch):
    tmp, post, db = world
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "anchor", "--model", post, "--dft-db", db, "--no-sevenn", "--samples", "4"]
    rc = main(
        [
            *argv,
            "--heldout",
            "Cu2@5Na",
            "--variants",
            "base,offset,pair,site,site-pair,finetune,replay",
            "--replay",
            str(tmp / "pretrain.extxyz"),
            "--replay-n",
            "4",
            "--epochs",
            "25",
            "--lr",
            "5e-3",
            "--out",
            str(tmp_path / "run"),
            "--pretrain-valid",
            str(tmp / "pretrain.extxyz"),
            "--pretrain-n",
            "4",
        ]
    )
    assert rc == 0
    res = json.loads((tmp_path / "benchmarks" / "results" / "anchor.json").read_text())
    assert [r["host"] for r in res["test"]] == ["Cu2@5Na"]
    assert sorted(r["host"] for r in res["train"]) == ["Cu2@4Na", "Ni2@4Na", "Ni2@5Na"]
    assert res["n_train_slabs"] == 6 and res["n_train_frames"] == 7  # 3 hosts x (host, host+H) + H2
    tr = res["train_summary"]
    # the offset baseline removes the mean training error exactly; fine-tuning fits the DFT labels better
    assert tr["offset"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert tr["finetune"]["mae"] < 0.5 * tr["base"]["mae"], tr
    assert tr["replay"]["mae"] < 0.5 * tr["base"]["mae"], tr  # replayed forces do not stop the energy fit
    # σ of the anchored variants: leave-one-host-out over the 3 training hosts (one triple each)
    assert sorted(res["loho_rms"]) == ["finetune", "offset", "pair", "replay", "site", "site-pair"]
    # every label here has H on a metal: one class, whose offset is the global one pooled half-way... to itself
    assert res["anchors"]["site"]["class_offsets"] == pytest.approx(
        {"metal": res["anchors"]["site"]["offset"]}
    )
    assert tr["site"]["mae"] == pytest.approx(tr["offset"]["mae"])
    assert res["host_summary"]["site-pair"]["n"] == 1 and res["hosts"][0]["host"] == "Cu2@5Na"
    assert all(len(r) == 3 for r in res["loho_residuals"].values())
    from screening.anchoring import predictive_sigma

    for v in ("offset", "finetune"):
        loho = res["loho_residuals"][v]
        assert res["loho_rms"][v] == pytest.approx(float(np.sqrt(np.mean(np.square(loho)))))
        assert res["sigma_anchor"][v] == pytest.approx(predictive_sigma(loho, 3))  # with the default prior
        row = res["test"][0]
        assert row[v + "_sigma"] == pytest.approx(np.hypot(row["base_sigma"], res["sigma_anchor"][v]))
    assert "finetune_sigma_laplace" in res["test"][0]
    # forgetting check: the base network's force MAE on its own pre-training frames, and the fine-tuned one's
    assert sorted(res["pretrain_force_mae"]) == ["base", "finetune", "replay"]
    assert all(np.isfinite(v) and v >= 0 for v in res["pretrain_force_mae"].values())
    assert "Forgetting check" in (tmp_path / "BENCHMARKS.md").read_text()
    assert "## anchor" in (tmp_path / "BENCHMARKS.md").read_text()
    assert (tmp_path / "benchmarks" / "figures" / "anchor_parity.png").stat().st_size > 0


def test_anchor_bench_no_loho_fits_each_trained_variant_once(world, tmp_path, monkeypatch):
    """--no-loho: one fine-tuning, no leave-one-host-out refits; the trained variant keeps its own σ and the
    offset variants their LOHO σ. Other fine-tuning settings train in another work folder."""
    tmp, post, db = world
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    argv = ["bench", "anchor", "--model", post, "--dft-db", db, "--no-sevenn", "--samples", "4",
            "--heldout", "Cu2@5Na", "--variants", "base,pair,finetune", "--epochs", "3", "--out", str(run),
            "--no-loho"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads((tmp_path / "benchmarks" / "results" / "anchor.json").read_text())
    assert sorted(res["loho_rms"]) == ["pair"]
    row = res["test"][0]
    assert row["finetune_sigma"] == pytest.approx(row["finetune_sigma_laplace"])
    assert len(list(run.glob("finetune-*"))) == 1  # no refit per training host
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "--no-loho" in md and "show their own Laplace σ" in md
    assert main([*argv, "--trainable", "readout"]) == 0
    assert len(list(run.glob("finetune-*"))) == 2


def test_anchor_bench_bad_input(world, tmp_path, monkeypatch, capsys):
    tmp, post, db = world
    monkeypatch.chdir(tmp_path)
    base = ["bench", "anchor", "--model", post, "--dft-db", db, "--no-sevenn"]
    assert main([*base, "--heldout", "Cu2@5Na", "--section", "../x"]) == 2
    assert "--section '../x' is not allowed" in capsys.readouterr().err
    assert main([*base, "--heldout", "Cu2@5Na", "--variants", "base,magic"]) == 2
    assert "'magic'" in capsys.readouterr().err
    assert main([*base, "--heldout", "Cu5Na"]) == 2
    assert "not a host name: Cu5Na" in capsys.readouterr().err
    assert main([*base, "--heldout", "Fe2@2Na", "--variants", "base"]) == 2  # nothing held out in the store
    assert "no held-out" in capsys.readouterr().err
    assert main([*base[:-1], "--dft-db", str(tmp_path / "none.db"), "--heldout", "Cu2@5Na"]) == 2
    assert main([*base, "--heldout", "Cu2@5Na", "--variants", "base,replay"]) == 2
    assert "needs --replay FILE" in capsys.readouterr().err
    bad = ["--variants", "replay", "--replay", str(tmp_path / "missing.extxyz")]
    assert main([*base, "--heldout", "Cu2@5Na", *bad]) == 2
    assert "missing.extxyz" in capsys.readouterr().err
    assert main([*base, "--heldout", "Cu2@5Na", "--device", "gpu0"]) == 2
    assert "device 'gpu0' is not a device name" in capsys.readouterr().err
    assert main([*base, "--heldout", "Cu2@5Na", "--laplace-structures", "-2"]) == 2
    assert "--laplace-structures -2 not allowed" in capsys.readouterr().err
    assert main([*base, "--heldout", "Cu2@5Na", "--batch-size", "0"]) == 2
    assert "--batch-size 0 not allowed; need >= 1" in capsys.readouterr().err
    assert not (tmp_path / "BENCHMARKS.md").exists()


def test_stats_errors_coverage_and_top_list_by_hand():
    from screening.bench_anchor import _stats

    rows = [  # ΔGH* = ΔE_H + 0.24: DFT-active are the first two (|ΔGH*| <= 0.2)
        {"dft_de": -0.24, "m": -0.94, "m_sigma": 0.2},  # error -0.7, |ΔGH*| 0.7 - 0.4 > 0.2: lost
        {"dft_de": -0.10, "m": -0.60, "m_sigma": 0.2},  # error -0.5, |ΔGH*| 0.36 - 0.4 <= 0.2: kept
        {"dft_de": 0.76, "m": 0.66, "m_sigma": 0.2},  # error -0.1, not DFT-active
    ]
    s = _stats(rows, "m")
    assert s["n"] == 3 and s["mae"] == pytest.approx(1.3 / 3) and s["mean"] == pytest.approx(-1.3 / 3)
    assert s["max"] == pytest.approx(0.7) and s["cov2"] == pytest.approx(1 / 3)
    assert (s["dft_active"], s["recovered"]) == (2, 1)
    assert s["list_fraction"] == pytest.approx(1 / 3)  # only the kept one; the third is 0.5 eV out
    no_sigma = _stats([{k: v for k, v in r.items() if k != "m_sigma"} for r in rows], "m")
    assert "cov2" not in no_sigma and no_sigma["recovered"] == 0


def test_anchoring_offsets_and_leave_one_host_out_by_hand():
    from screening.anchoring import fit_anchor, offset_for, pair_of, predictive_sigma
    from screening.bench_anchor import anchored_sigma

    # predictive σ by hand: residuals (0.3, -0.3) of n = 3 hosts, prior 0.5 eV worth 2 hosts
    tau2 = (2 * 0.25 + (0.09 + 0.09) / 1.5) / 4
    assert predictive_sigma([0.3, -0.3], 3, 0.5, 2.0) == pytest.approx(np.sqrt(tau2 * (1 + 1 / 3)))
    assert predictive_sigma([], 2, 0.5, 2.0) == pytest.approx(0.5 * np.sqrt(1.5))  # the prior alone
    assert predictive_sigma([0.3, -0.3], 3, 0.5, 0.0) == pytest.approx(np.sqrt(0.18 / 1.5 / 2 * (4 / 3)))
    with pytest.raises(ValueError):
        predictive_sigma([], 3, 0.5, 0.0)

    rows = [  # DFT - base residuals: Au2@1 1.0 (mean of two triples), Au2@2 0.6, Pt2@1 0.4, Cu2@1 0.7
        {"host": "Au2@1", "dft_de": 1.2, "base": 0.0},
        {"host": "Au2@1", "dft_de": 0.3, "base": -0.5},
        {"host": "Au2@2", "dft_de": 0.6, "base": 0.0},
        {"host": "Pt2@1", "dft_de": 0.4, "base": 0.0},
        {"host": "Cu2@1", "dft_de": 0.2, "base": -0.5},
    ]
    assert pair_of("Au2@4Nf") == "Au2" and pair_of("FeCo@3Nb") == "FeCo"
    g = fit_anchor(rows, kappa=None)
    assert g["offset"] == pytest.approx((1.0 + 0.6 + 0.4 + 0.7) / 4) and g["pair_offsets"] == {}
    # leave out Au2@1: mean(0.6, 0.4, 0.7) = 0.5667 -> triples 1.2 - 0.5667, 0.8 - 0.5667; and so on
    loho = [1.2 - 1.7 / 3, 0.8 - 1.7 / 3, 0.6 - 2.1 / 3, 0.7 - 2.0 / 3, 0.4 - 2.3 / 3]  # hosts sorted
    assert g["loho_residuals"] == pytest.approx(loho)
    assert g["loho_rms"] == pytest.approx(np.sqrt(np.mean(np.square(loho))))
    assert g["sigma_add"] == pytest.approx(predictive_sigma(loho, 4))
    assert g["sigma_add_covered"] == g["sigma_add"]  # no pair offsets: nothing is "covered"
    p = fit_anchor(rows, kappa=1.0)
    b = g["offset"]
    assert p["pair_offsets"] == pytest.approx(
        {"Au2": b + 2 / 3 * (0.8 - b), "Pt2": b + 0.5 * (0.4 - b), "Cu2": b + 0.5 * (0.7 - b)}
    )
    # covered residuals: only Au2 keeps a host when one of its hosts is left out
    b1 = (0.6 + 0.4 + 0.7) / 3  # without Au2@1
    b2 = (1.0 + 0.4 + 0.7) / 3  # without Au2@2
    cov = [1.2 - (b1 + 0.5 * (0.6 - b1)), 0.8 - (b1 + 0.5 * (0.6 - b1)), 0.6 - (b2 + 0.5 * (1.0 - b2))]
    assert p["loho_residuals_covered"] == pytest.approx(cov)
    assert p["sigma_add_covered"] == pytest.approx(min(predictive_sigma(cov, 2), p["sigma_add"]))
    p0 = fit_anchor(rows, 1.0, prior_weight=0.0)  # no prior: the data alone, never above the global term
    assert p0["sigma_add"] == pytest.approx(predictive_sigma(loho, 4, prior_weight=0.0))
    assert p0["sigma_add_covered"] == pytest.approx(
        min(predictive_sigma(cov, 2, prior_weight=0.0), p0["sigma_add"])
    )
    assert offset_for(p, "Au2@9Zz") == pytest.approx((p["pair_offsets"]["Au2"], p["sigma_add_covered"]))
    assert offset_for(p, "Fe2@9Zz") == pytest.approx((b, p["sigma_add"]))
    au, pt = p["pair_offsets"]["Au2"], p["pair_offsets"]["Pt2"]  # heteronuclear: mean of the two pairs
    assert offset_for(p, "AuPt@3Nb") == pytest.approx((0.5 * (au + pt), p["sigma_add_covered"]))
    assert offset_for(p, "AuFe@3Nb") == pytest.approx((b, p["sigma_add"]))  # Fe2 unlabelled: global
    assert offset_for(p, None) == pytest.approx((b, p["sigma_add"]))
    assert offset_for(None, "Au2@1") == (0.0, 0.0)
    with pytest.raises(ValueError):
        fit_anchor(rows[:2])
    assert anchored_sigma(0.3, 0.4) == pytest.approx(0.5)


def test_anchor_command_writes_an_offset_anchored_posterior(world, tmp_path, capsys):
    from potentials.bayes import load_posterior
    from screening.bench_model import dft_triples, triple_de

    tmp, post, db = world
    out = tmp_path / "anchored.pt"
    argv = ["anchor", "--model", post, "--dft-db", db, "--samples", "4", "--out", str(out)]
    assert main([*argv, "--exclude-hosts", "Cu2@5Na"]) == 0
    assert "3 hosts" in capsys.readouterr().out
    base, anchored = load_posterior(post), load_posterior(out)
    fit = anchored.recal.anchor
    assert fit["hosts"] == ["Cu2@4Na", "Ni2@4Na", "Ni2@5Na"] and fit["excluded_hosts"] == ["Cu2@5Na"]
    sh = L.settings_hash(L.get_engine("gpaw"), L.get_preset("pw500"))
    triples = {t["host"]: t for t in dft_triples(db, sh)}
    res = {h: triples[h]["dft_de"] - triple_de(base, triples[h]["atoms"], 4)[0] for h in fit["hosts"]}
    assert anchored.recal.dg_offset == pytest.approx(np.mean(list(res.values())), abs=1e-9)
    # leave-one-host-out by hand: each host against the mean residual of the other two
    loho = [res[h] - np.mean([res[o] for o in res if o != h]) for h in fit["hosts"]]
    from screening.anchoring import predictive_sigma

    assert anchored.recal.dg_sigma_add == pytest.approx(predictive_sigma(loho, 3), abs=1e-9)
    # pair offsets pooled half-way (kappa 1) for Cu2 (one host), two thirds for Ni2 (two hosts)
    b = anchored.recal.dg_offset
    ni = np.mean([res["Ni2@4Na"], res["Ni2@5Na"]])
    assert fit["pair_offsets"] == pytest.approx(
        {"Cu2": b + 0.5 * (res["Cu2@4Na"] - b), "Ni2": b + 2 / 3 * (ni - b)}
    )
    # the anchored model reports base + its pair's offset, σ in quadrature; the weights are the same
    held = triples["Cu2@5Na"]["atoms"]
    (d0, s0), (d1, s1) = triple_de(base, held, 4), triple_de(anchored, held, 4)
    assert d1 == pytest.approx(d0 + fit["pair_offsets"]["Cu2"], abs=1e-9)
    assert s1 == pytest.approx(np.hypot(s0, fit["sigma_add_covered"]), abs=1e-9)
    assert triple_de(anchored, held, 4, anchored=False)[0] == pytest.approx(d0, abs=1e-9)
    assert main([*argv, "--exclude-hosts", "Cu2@5Na", "--global-only"]) == 0
    glob = load_posterior(out)
    assert glob.recal.anchor["pair_offsets"] == {}
    assert triple_de(glob, held, 4)[0] == pytest.approx(d0 + glob.recal.dg_offset, abs=1e-9)


def test_sigma_only_scales_the_dg_sigma_by_the_unit_variance_factor_of_the_chosen_hosts(
    world, tmp_path, capsys
):
    """`screen anchor --sigma-only --hosts`: σ factor s = (mean z²)^½ over the chosen hosts' triples, no offset,
    leave-one-host-out coverage by hand; the copy has the parent's network hash, so a screen with it reuses
    every relaxation and reports the same ΔGH* with s times the σ."""
    from potentials import checkpoint
    from potentials.bayes import load_posterior
    from screening.bench_model import dft_triples, triple_de
    from screening.pipeline import ScreenConfig, load_model, run_screen
    from screening.relax import RelaxConfig
    from screening.store import load_results

    tmp, post, db = world
    out = tmp_path / "sigma.pt"
    chosen = ["Cu2@4Na", "Ni2@4Na", "Ni2@5Na"]
    argv = ["anchor", "--model", post, "--dft-db", db, "--samples", "4", "--out", str(out), "--sigma-only"]
    assert main([*argv, "--hosts", ",".join(chosen)]) == 0
    assert "no offset" in capsys.readouterr().out
    base, cal = load_posterior(post), load_posterior(out)
    sh = L.settings_hash(L.get_engine("gpaw"), L.get_preset("pw500"))
    triples = {t["host"]: t for t in dft_triples(db, sh)}
    pred = {h: triple_de(base, triples[h]["atoms"], 4) for h in triples}
    z = {h: (pred[h][0] - triples[h]["dft_de"]) / pred[h][1] for h in chosen}
    s = float(np.sqrt(np.mean([v**2 for v in z.values()])))
    fit = cal.recal.dg_fit
    assert fit["factor"] == pytest.approx(s, rel=1e-9) and cal.recal.dg == pytest.approx(s, rel=1e-9)
    assert fit["hosts"] == chosen and fit["parent_dg"] == 1.0 and cal.recal.anchor is None
    loho = [z[h] / np.sqrt(np.mean([z[o] ** 2 for o in chosen if o != h])) for h in chosen]
    assert fit["loho_coverage"] == pytest.approx([np.mean(np.abs(loho) <= k) for k in (1, 2)])
    for h, (d0, s0) in pred.items():  # every host, also the one left out of the fit
        d1, s1 = triple_de(cal, triples[h]["atoms"], 4)
        assert d1 == pytest.approx(d0, abs=1e-9) and s1 == pytest.approx(s * s0, rel=1e-9)
    pa, pc = checkpoint.load(post), checkpoint.load(out)
    assert pc["hash"] != pa["hash"] and checkpoint.network_hash(pc) == pa["hash"]
    results = tmp_path / "results.db"
    cfg = ScreenConfig(metals="Cu,Ni", motifs="4Na", relax=RelaxConfig(max_steps=15), progress=False)
    first = run_screen(cfg, results, model=load_model(post), out=None)
    second = run_screen(cfg, results, model=load_model(str(out)), out=None)
    assert first.n_relaxed > 0 and second.n_relaxed == 0 and second.n_references == 0
    a = load_results(results, model_hash=first.model_hash).set_index("host")
    b = load_results(results, model_hash=second.model_hash).set_index("host")
    for host in ("Cu2@4Na", "Ni2@4Na"):
        assert b.loc[host, "dg"] == pytest.approx(a.loc[host, "dg"], abs=1e-9)
        assert b.loc[host, "dg_std"] == pytest.approx(s * a.loc[host, "dg_std"], rel=1e-6)
    # bad input: a host without a triple, a model that already carries an offset anchoring; nothing written
    bad = tmp_path / "bad.pt"
    argv[argv.index(str(out))] = str(bad)
    assert main([*argv, "--hosts", "Cu2@4Na,Fe2@4Na"]) == 2
    assert "--hosts: no pw500 DFT triple outside --exclude-hosts for Fe2@4Na" in capsys.readouterr().err
    anchored = tmp_path / "anchored.pt"
    assert main(["anchor", "--model", post, "--dft-db", db, "--samples", "4", "--out", str(anchored)]) == 0
    argv[argv.index(post)] = str(anchored)
    assert main(argv) == 2
    assert "already carries a DFT offset anchoring" in capsys.readouterr().err
    assert main([*argv, "--site-classes"]) == 2
    assert "--sigma-only fits no offset" in capsys.readouterr().err
    assert not bad.exists()


def test_screen_with_a_laplace_refit_of_the_same_weights_reuses_the_relaxations(world, tmp_path):
    """A Laplace posterior refitted on the unchanged weights of another (``screen train --epochs 0``)
    relaxes like it: a screen finds every relaxation of the first model in the store and reports the same
    ΔGH* with the new posterior's σ."""
    from potentials.bayes import load_posterior
    from potentials.bayes.laplace import LaplaceConfig, fit_laplace
    from screening.pipeline import ScreenConfig, load_model, run_screen
    from screening.relax import RelaxConfig
    from screening.store import load_results

    tmp, post, db = world
    base = load_posterior(post)
    frames = _emt(_queue())
    refit = fit_laplace(
        frames, None, base.config, None, LaplaceConfig(variant="last_layer", ggn="exact", n_samples=4),
        tmp_path / "refit", init_from=post, train=False,
    )  # fmt: skip
    path = refit.save(tmp_path / "refit.pt")
    results = tmp_path / "results.db"
    cfg = ScreenConfig(metals="Cu,Ni", motifs="4Na", relax=RelaxConfig(max_steps=15), progress=False)
    first = run_screen(cfg, results, model=load_model(post), out=None)
    second = run_screen(cfg, results, model=load_model(str(tmp_path / "refit.pt")), out=None)
    assert path and second.model_hash != first.model_hash
    assert first.n_relaxed > 0 and second.n_relaxed == 0 and second.n_references == 0 and second.n_dg == 2
    a = load_results(results, model_hash=first.model_hash).set_index("host")
    b = load_results(results, model_hash=second.model_hash).set_index("host")
    for host in ("Cu2@4Na", "Ni2@4Na"):
        assert b.loc[host, "dg"] == pytest.approx(a.loc[host, "dg"], abs=1e-6)
        assert b.loc[host, "dg_std"] != pytest.approx(a.loc[host, "dg_std"], rel=1e-3)


def test_screen_with_an_anchored_copy_reuses_the_relaxations(world, tmp_path, capsys):
    """`screen anchor` changes ΔGH* offsets and σ only: a screen with the anchored copy finds every
    relaxation of the unanchored model's screen in the store, writes its own ΔG rows, and those are the
    unanchored ones plus the pair's offset (export still finds their structures)."""
    from potentials.bayes import load_posterior
    from screening.pipeline import ScreenConfig, load_model, run_screen
    from screening.relax import RelaxConfig
    from screening.store import load_results

    tmp, post, db = world
    anchored = tmp_path / "anchored.pt"
    assert main(["anchor", "--model", post, "--dft-db", db, "--samples", "4", "--out", str(anchored)]) == 0
    results = tmp_path / "results.db"
    cfg = ScreenConfig(metals="Cu,Ni", motifs="4Na", relax=RelaxConfig(max_steps=15), progress=False)
    first = run_screen(cfg, results, model=load_model(post), out=None)
    second = run_screen(cfg, results, model=load_model(str(anchored)), out=None)
    assert first.n_relaxed > 0 and second.n_relaxed == 0 and second.n_skipped == first.n_relaxed
    assert second.n_references == 0 and second.n_dg == first.n_dg == 2
    assert second.model_hash != first.model_hash
    a = load_results(results, model_hash=first.model_hash).set_index("host")
    b = load_results(results, model_hash=second.model_hash).set_index("host")
    # relaxations keyed by the unanchored model's relaxation hash (its Laplace fit's parent network)
    assert (b["structure_model_hash"] == a["structure_model_hash"]).all()
    pairs = load_posterior(anchored).recal.anchor["pair_offsets"]
    for host in ("Cu2@4Na", "Ni2@4Na"):
        assert b.loc[host, "dg"] == pytest.approx(a.loc[host, "dg"] + pairs[host[:3]], abs=1e-9)
        assert b.loc[host, "dg_std"] > a.loc[host, "dg_std"]
    out = tmp_path / "export"
    argv = ["export", "--db", str(results), "--select", "top:1", "--format", "extxyz", "--out", str(out)]
    assert main([*argv, "--model-hash", second.model_hash]) == 0
    capsys.readouterr()


def test_anchor_command_bad_input(world, tmp_path, capsys):
    tmp, post, db = world
    out = tmp_path / "a.pt"
    base = ["anchor", "--model", post, "--dft-db", db, "--out", str(out)]
    assert main([*base, "--exclude-hosts", "Cu2@4Na,Ni2@4Na,Ni2@5Na"]) == 2  # one host left
    assert "at least 2 hosts" in capsys.readouterr().err
    assert main([*base, "--preset", "pw9000"]) == 2
    assert "'pw9000'" in capsys.readouterr().err
    assert main(["anchor", "--model", post, "--dft-db", db, "--out", post]) == 2
    assert "is the input model" in capsys.readouterr().err
    assert main([*base, "--kappa", "-1"]) == 2
    assert "--kappa -1.0 not allowed" in capsys.readouterr().err
    assert main([*base, "--prior-sigma", "nan"]) == 2
    assert "--prior-sigma nan not allowed" in capsys.readouterr().err
    assert not out.exists()


def test_model_card_of_an_anchored_model_reports_dft_errors_on_hosts_outside_the_fit(
    world, tmp_path, monkeypatch
):
    from ase.io import write

    tmp, post, db = world
    monkeypatch.chdir(tmp_path)
    anchored = tmp_path / "anchored.pt"
    assert main(["anchor", "--model", post, "--dft-db", db, "--samples", "4", "--out", str(anchored)]) == 0
    valid = tmp_path / "valid.extxyz"
    write(valid, _emt(_queue()[:3]))
    card = tmp_path / "card" / "MODEL_CARD.md"
    argv = ["bench", "model", "--model", str(anchored), "--valid", str(valid), "--dft-db", db]
    assert main([*argv, "--card", str(card), "--no-sevenn", "--samples", "4"]) == 0
    text = card.read_text()
    assert "DFT anchoring" in text and "against the training reference" not in text
    assert f"Hash `{load(anchored)['hash'][:16]}`" in text  # the model's, not a host name
    res = json.loads((tmp_path / "benchmarks" / "results" / "model.json").read_text())
    roles = {r["host"]: r["role"] for r in res["dft"]}
    assert roles == {h: "anchor fit" for h in ("Cu2@4Na", "Cu2@5Na", "Ni2@4Na", "Ni2@5Na")}  # fitted on all 4
    assert "Every structure was used to fit the anchoring" in text
    # fitted on 3, the 4th is the held-out error the card reports
    assert main(["anchor", "--model", post, "--dft-db", db, "--samples", "4", "--out", str(anchored),
                 "--exclude-hosts", "Ni2@5Na"]) == 0  # fmt: skip
    assert main([*argv, "--card", str(card), "--no-sevenn", "--samples", "4"]) == 0
    res = json.loads((tmp_path / "benchmarks" / "results" / "model.json").read_text())
    held = [r for r in res["dft"] if r["role"] == "held out"]
    assert [r["host"] for r in held] == ["Ni2@5Na"]
    err = abs(held[0]["model_de"] - held[0]["dft_de"])
    assert f"MAE against DFT {err:.3f} eV" in card.read_text()
    assert f"lowest labelled site): MAE {err:.3f} eV over 1 hosts" in card.read_text()  # one site per host
    assert "metals Cu, Ni and the motifs 4Na, 5Na only" in card.read_text()
    # re-anchored with site classes, no --valid: the held-out errors of the same network are reused, and the
    # card describes the class offsets; another network's result is refused
    first = json.loads((tmp_path / "benchmarks" / "results" / "model.json").read_text())
    assert main(["anchor", "--model", post, "--dft-db", db, "--samples", "4", "--out", str(anchored),
                 "--site-classes"]) == 0  # fmt: skip
    short = ["bench", "model", "--model", str(anchored), "--dft-db", db, "--card", str(card), "--no-sevenn"]
    assert main([*short, "--samples", "4"]) == 0
    res = json.loads((tmp_path / "benchmarks" / "results" / "model.json").read_text())
    assert res["forces"] == first["forces"] and res["network_hash"] == first["network_hash"]
    text = card.read_text()
    assert "Measured on this network" in text and "before the lowest site is picked" in text
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**first, "network_hash": "0" * 64}))
    assert main([*short, "--reuse-valid", str(other)]) == 2
    # a σ-only calibration on two hosts: those are `σ calibration`, the other two the held-out figures
    assert main(["anchor", "--model", post, "--dft-db", db, "--samples", "4", "--out", str(anchored),
                 "--sigma-only", "--hosts", "Cu2@4Na,Ni2@4Na"]) == 0  # fmt: skip
    assert main([*short, "--samples", "4"]) == 0
    res = json.loads((tmp_path / "benchmarks" / "results" / "model.json").read_text())
    roles = {r["host"]: r["role"] for r in res["dft"]}
    assert roles == {"Cu2@4Na": "σ calibration", "Ni2@4Na": "σ calibration"} | {
        h: "held out" for h in ("Cu2@5Na", "Ni2@5Na")
    }
    text = card.read_text()
    assert (
        "ΔGH* σ calibrated against DFT" in text and "On the 2 structure(s) outside the σ calibration" in text
    )


# ---- bench dft-al: the retrospective of DFT labelling strategies ----------------------------------------
def _host(host, dft, base, ep, bald, core=1.0, triples=None):
    """A host row of bench_dft_al.host_rows; ``triples`` (site class, DFT, base) default to one metal-site
    triple with the host's means."""
    from screening.anchoring import pair_of

    trip = [
        {"host": host, "dft_de": d, "base": b, "site_class": c}
        for c, d, b in (triples or [("metal", dft, base)])
    ]
    return {"host": host, "pair": pair_of(host), "dft_de": dft, "base": base, "sigma_ep": ep, "bald": bald,
            "core_h": core, "triples": trip}  # fmt: skip


def test_dft_al_acquisition_orders_and_anchored_mae_by_hand():
    from screening.bench_dft_al import acquisition_order, anchored_mae, rank_correlation

    pool = [
        _host("Pt2@4Nd", 0.0, -1.0, 0.3, 2.0),
        _host("Pt2@5Na", 0.0, -0.8, 0.2, 1.9),
        _host("Cu2@4Na", 0.0, 0.0, 0.1, 1.0),
        _host("Fe2@3Nd", 0.5, 0.0, 0.25, 0.5),
    ]
    rng = np.random.default_rng(0)
    assert acquisition_order(pool, "bald", rng) == [0, 1, 2, 3]
    assert acquisition_order(pool, "sigma", rng) == [0, 3, 1, 2]
    # pairs first: the second Pt host waits until Cu and Fe have one label each
    assert acquisition_order(pool, "bald-pair", rng) == [0, 2, 3, 1]
    for _ in range(5):
        order = acquisition_order(pool, "pair", rng)
        assert sorted(order) == [0, 1, 2, 3] and {pool[i]["pair"] for i in order[:3]} == {"Pt2", "Cu2", "Fe2"}
        assert sorted(acquisition_order(pool, "random", rng)) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        acquisition_order(pool, "magic", rng)
    test = [_host("Pt2@3Nc", 0.2, -0.7, 0.2, 1.0), _host("Re2@3Nc", -0.5, -0.3, 0.2, 1.0)]
    # nothing acquired: the base errors 0.9 and 0.2
    assert anchored_mae([], test, 1.0) == pytest.approx(0.55)
    # one host: its residual (+1.0) as a global offset -> errors 0.1 and 1.2
    assert anchored_mae(pool[:1], test, 1.0) == pytest.approx(0.65)
    # two Pt hosts (residuals +1.0, +0.8): pair Pt2 and the global offset both +0.9 -> errors 0.0 and 1.1
    assert anchored_mae(pool[:2], test, 1.0) == pytest.approx(0.55)
    # the same two hosts and no site-class dependence: site-class anchoring gives the same offsets
    assert anchored_mae(pool[:2], test, 1.0, site_classes=True) == pytest.approx(0.55)
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_dft_al_site_class_anchoring_by_hand():
    """The model is 1 eV too low on N sites and right on metal sites, on every host: pair offsets average
    the two (+0.5 eV each), site classes separate them. Two acquired hosts: host residuals 0.5 -> b = 0.5;
    class N 0.5 + 2/3 (1.0 - 0.5) = 0.833, metal 0.5 + 2/3 (0 - 0.5) = 0.167 (κ_class 1); pair deviations 0."""
    from screening.bench_dft_al import anchored_mae

    def two_sites(host):
        return _host(host, 0.5, 0.0, 0.2, 1.0, triples=[("N", 1.0, 0.0), ("metal", 0.0, 0.0)])

    acquired = [two_sites("Cu2@4Na"), two_sites("Fe2@3Nd")]
    test = [two_sites("Ni2@4Na")]
    assert anchored_mae(acquired, test, 1.0) == pytest.approx(0.5)
    assert anchored_mae(acquired, test, 1.0, site_classes=True) == pytest.approx(1 / 6)
    # one acquired host: its mean residual over its triples as a global offset, either way
    assert anchored_mae(acquired[:1], test, 1.0, site_classes=True) == pytest.approx(0.5)
    # a host's error is the mean over its triples, then the mean over hosts
    test2 = test + [_host("Re2@3Nc", 0.0, 0.0, 0.2, 1.0)]
    assert anchored_mae(acquired, test2, 1.0, site_classes=True) == pytest.approx((1 / 6 + 1 / 6) / 2)


def test_dft_al_learning_curve_floor():
    from screening.bench_dft_al import hosts_for_mae, learning_curve_floor

    n = np.arange(12, dtype=float)
    curve = 0.3 + 0.5 / np.sqrt(np.maximum(n, 1))
    curve[0], curve[1] = 9.0, -9.0  # n < start is ignored
    fit = learning_curve_floor(curve)
    assert fit["floor"] == pytest.approx(0.3) and fit["slope"] == pytest.approx(0.5)
    assert hosts_for_mae(fit, 0.15) is None  # the floor is above the target
    assert hosts_for_mae(fit, 0.4) == pytest.approx(25.0)  # 0.3 + 0.5/5
    assert hosts_for_mae({"floor": 0.1, "slope": -0.1}, 0.15) == 0.0
    with pytest.raises(ValueError):
        learning_curve_floor([0.5, 0.4, 0.3])


def test_dft_al_simulation_and_savings():
    from screening.bench_dft_al import savings, simulate

    rng = np.random.default_rng(1)
    metals = ["Pt", "Cu", "Fe", "Ir", "Au", "Re"]
    offsets = dict(zip(metals, [1.0, 0.0, 0.5, 0.9, 1.4, -0.2]))
    rows = [
        _host(
            f"{m}2@{mo}",
            float(rng.normal(0, 0.3)),
            0.0,
            float(rng.uniform(0.1, 0.3)),
            float(rng.uniform(1, 2)),
        )
        for m in metals
        for mo in ("4Na", "5Na")
    ]
    for r in rows:  # the model's error is the metal's offset: labels of a new pair teach the most
        r["base"] = r["triples"][0]["base"] = r["dft_de"] - offsets[r["pair"][:-1]]
    sim = simulate(rows, ["random", "pair", "bald"], 60, 0.5, 1.0, seed=0)
    # one metal-site triple per host: site-class anchoring has one class and equals pair offsets here
    sim_sites = simulate(rows, ["random", "pair", "bald"], 60, 0.5, 1.0, seed=0, site_classes=True)
    for s in ("random", "pair", "bald"):
        assert np.allclose(sim_sites["mae"][s], sim["mae"][s])
    assert sim["n_test"] == 6 and sim["n_pool"] == 6
    for s in ("random", "pair", "bald"):
        assert sim["mae"][s].shape == (60, 7)
        assert np.allclose(sim["core_h"][s][:, -1], 6.0) and np.allclose(sim["core_h"][s][:, 0], 0.0)
    # with the whole pool labelled every strategy holds the same hosts: the same MAE in every split
    assert np.allclose(sim["mae"]["random"][:, -1], sim["mae"]["bald"][:, -1])
    assert np.allclose(sim["mae"]["random"][:, 0], sim["mae"]["pair"][:, 0])
    # covering the pairs first beats random in this world
    assert sim["mae"]["pair"][:, 3].mean() < sim["mae"]["random"][:, 3].mean()
    save = savings(sim, 3)
    target = save.pop("_target")
    assert target["mae"] == pytest.approx(sim["mae"]["random"][:, 3].mean())
    assert save["random"]["labels"] <= 3 and save["pair"]["labels"] <= save["random"]["labels"]
    assert save["pair"]["saved_core_h"] == pytest.approx(3.0 - save["pair"]["labels"])


def test_dft_al_bench_command(world, tmp_path, monkeypatch, capsys):
    tmp, post, db = world
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "dft-al", "--model", post, "--dft-db", db, "--splits", "20", "--samples", "4"]
    assert main(argv) == 0
    res = json.loads((tmp_path / "benchmarks" / "results" / "dft_al.json").read_text())
    assert sorted(r["host"] for r in res["hosts"]) == ["Cu2@4Na", "Cu2@5Na", "Ni2@4Na", "Ni2@5Na"]
    assert all(r["core_h"] == pytest.approx(1200 / 3600) for r in res["hosts"])  # two 600 s single points
    assert res["n_pool"] + res["n_test"] == 4 and set(res["savings"]) == {
        "random",
        "pair",
        "sigma",
        "bald",
        "bald-pair",
    }
    assert res["anchoring"] == "site-pair" and res["learning_curve_fit"] is None  # a pool of 2 or 3 hosts
    assert "No extrapolation: a pool of" in (tmp_path / "BENCHMARKS.md").read_text()
    assert all(len(r["triples"]) >= 1 and r["triples"][0]["site_class"] for r in res["hosts"])
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## dft_al" in text and "site-class offsets" in text and "--anchoring site-pair" in text
    assert (tmp_path / "benchmarks" / "figures" / "dft_al.png").stat().st_size > 0
    assert main([*argv, "--anchoring", "pair"]) == 0
    assert (
        json.loads((tmp_path / "benchmarks" / "results" / "dft_al.json").read_text())["anchoring"] == "pair"
    )
    capsys.readouterr()
    for bad, msg in ((["--strategies", "magic"], "'magic'"), (["--anchoring", "magic"], "'magic'"),
                     (["--target-mae", "0"], "--target-mae 0"), (["--splits", "0"], "--splits 0"),
                     (["--test-fraction", "1"], "--test-fraction 1"), (["--budget", "9"], "--budget 9")):  # fmt: skip
        assert main([*argv, *bad]) == 2
        assert msg in capsys.readouterr().err


def test_anchor_bench_anchors_the_reference_model_too(world, tmp_path, monkeypatch):
    """`sevenn-pair`: pair offsets fitted to the reference model's ΔE_H. With EMT standing in for both DFT
    and the reference model, every residual is 0, so the anchored reference equals DFT exactly."""
    import screening.bench_model

    tmp, post, db = world
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(screening.bench_model, "sevenn_calculator", lambda: EMT())
    argv = ["bench", "anchor", "--model", post, "--dft-db", db, "--samples", "4", "--heldout", "Cu2@5Na"]
    assert (
        main([*argv, "--variants", "base,pair", "--out", str(tmp_path / "run"), "--section", "anchor_x"]) == 0
    )
    res = json.loads((tmp_path / "benchmarks" / "results" / "anchor_x.json").read_text())
    assert (tmp_path / "benchmarks" / "figures" / "anchor_x_parity.png").exists()
    assert res["test"] and all(r["sevenn-pair"] == pytest.approx(r["dft_de"], abs=1e-9) for r in res["test"])
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| sevenn-pair | " in md and "`sevenn-pair` is SevenNet-0's ΔE_H" in md and "## anchor_x" in md
    assert "--section anchor_x" in md


def test_anchor_bench_counts_each_heldout_host_once(world, tmp_path, monkeypatch):
    """A held-out host with a builder-geometry triple (a settings check) besides its validate triple is
    tested once, on the validate (model-relaxed) geometry."""
    import shutil

    import ase.db

    tmp, post, db = world
    monkeypatch.chdir(tmp_path)
    copy = tmp_path / "labels.db"
    shutil.copy(db, copy)
    gp, s = L.get_engine("gpaw"), L.PRESETS["pw500"]
    con = ase.db.connect(str(copy))
    for a in _emt([q for q in _queue() if q.info.get("host") == "Cu2@5Na" or q.info.get("name") == "H2"]):
        b = a.copy()
        b.positions[-1] += (0.0, 0.0, 0.01)  # another geometry: another label key
        b.info.update(frame="base")
        res = {"converged": True, "status": "ok", "energy": a.get_potential_energy() + 0.5,
               "forces": a.get_forces(), "wall_s": 600.0, "n_scf": 20}  # fmt: skip
        L.write_label_row(con, b, L.label_key(b, gp, s), "gpaw", "gpaw test", {"physics": gp.physics(s)}, res)
    from screening.bench_model import dft_triples

    both = [t["geometry"] for t in dft_triples(str(copy)) if t["host"] == "Cu2@5Na"]
    assert sorted(both) == ["builder", "validate"]
    argv = ["bench", "anchor", "--model", post, "--dft-db", str(copy), "--no-sevenn", "--samples", "2"]
    assert main([*argv, "--heldout", "Cu2@5Na", "--variants", "base", "--out", str(tmp_path / "run")]) == 0
    res = json.loads((tmp_path / "benchmarks" / "results" / "anchor.json").read_text())
    assert [r["host"] for r in res["test"]] == ["Cu2@5Na"] and "[builder]" not in res["test"][0]["name"]


def test_screen_with_a_site_class_anchoring_shifts_each_site_by_its_class(world, tmp_path, capsys):
    """`screen anchor --site-classes`: every H* site of a host gets its class's offset plus the pair's
    deviation before the lowest site is picked (the unanchored relaxations are reused)."""
    from potentials.bayes import load_posterior
    from screening.anchoring import offset_for, site_class
    from screening.pipeline import ScreenConfig, load_model, run_screen
    from screening.relax import RelaxConfig
    from screening.store import load_results, load_structures

    tmp, post, db = world
    anchored = tmp_path / "classes.pt"
    argv = ["anchor", "--model", post, "--dft-db", db, "--samples", "4", "--out", str(anchored)]
    assert main([*argv, "--site-classes"]) == 0
    assert "site classes: H on metal" in capsys.readouterr().out
    fit = load_posterior(anchored).recal.anchor
    assert fit["method"] == "site-class-pair" and set(fit["class_offsets"]) == {"metal"}  # top_M1 labels
    results = tmp_path / "results.db"
    cfg = ScreenConfig(metals="Cu,Ni", motifs="4Na", relax=RelaxConfig(max_steps=15), progress=False)
    first = run_screen(cfg, results, model=load_model(post), out=None)
    second = run_screen(cfg, results, model=load_model(str(anchored)), out=None)
    assert second.n_relaxed == 0
    a = load_results(results, model_hash=first.model_hash, with_data=True).set_index("host")
    b = load_results(results, model_hash=second.model_hash, with_data=True).set_index("host")
    net = str(a["structure_model_hash"].iloc[0])  # the relaxations' key (checkpoint.relaxation_hash)
    structs = load_structures(results, state="relaxed", model_hash=net)
    for host in ("Cu2@4Na", "Ni2@4Na"):
        rows = structs[(structs["host"] == host) & (structs["site"].fillna("").astype(str) != "")]
        classes = {str(r["site"]): site_class(r["atoms"]) for _, r in rows.iterrows()}
        assert set(classes.values()) <= {"metal", "N", "C"} and "metal" in classes.values()
        site_a, site_b = a.loc[host, "site_dg"], b.loc[host, "site_dg"]
        for site, cls in classes.items():
            assert site_b[site] == pytest.approx(site_a[site] + offset_for(fit, host, cls)[0], abs=1e-9)
        assert b.loc[host, "dg"] == pytest.approx(min(site_b.values()), abs=1e-9)
        assert b.loc[host, "best_site_class"] == classes[b.loc[host, "best_site"]]
    assert main([*argv, "--site-classes", "--kappa-class", "-1"]) == 2
    assert "--kappa-class" in capsys.readouterr().err


def test_anchor_bench_train_hosts_subsets_the_dft_training_hosts(world, tmp_path, monkeypatch, capsys):
    """--train-hosts N: a learning-curve point; training frames and anchoring triples come from a seeded
    subset of N DFT training hosts (H2 kept), the held-out triples are unchanged."""
    from screening.bench_anchor import subset_hosts

    tmp, post, db = world
    monkeypatch.chdir(tmp_path)
    base = ["bench", "anchor", "--model", post, "--dft-db", db, "--no-sevenn", "--samples", "4",
            "--heldout", "Cu2@5Na", "--variants", "base,pair", "--no-loho"]  # fmt: skip
    assert main(base) == 0
    full = json.loads((tmp_path / "benchmarks" / "results" / "anchor.json").read_text())
    assert main([*base, "--train-hosts", "2", "--seed", "3"]) == 0
    sub = json.loads((tmp_path / "benchmarks" / "results" / "anchor.json").read_text())
    keep = subset_hosts(["Cu2@4Na", "Ni2@4Na", "Ni2@5Na"], 2, 3)
    assert {r["host"] for r in full["train"]} == {"Cu2@4Na", "Ni2@4Na", "Ni2@5Na"}
    assert {r["host"] for r in sub["train"]} == keep
    assert sub["n_train_frames"] == 2 * 2 + 1 and full["n_train_frames"] == 3 * 2 + 1  # host, host+H; H2
    assert [r["name"] for r in sub["test"]] == [r["name"] for r in full["test"]]
    assert "--train-hosts 2 --seed 3" in sub["command"] and "--seed" not in full["command"]
    assert main([*base, "--seed", "2"]) == 0  # a seed alone (other replay draw and shuffle) is recorded too
    assert (
        " --seed 2"
        in json.loads((tmp_path / "benchmarks" / "results" / "anchor.json").read_text())["command"]
    )
    assert main([*base, "--train-hosts", "4"]) == 2
    assert "--train-hosts 4 not allowed; allowed: 1 to 3" in capsys.readouterr().err


def test_subset_hosts_is_seeded_and_sized():
    from screening.bench_anchor import subset_hosts

    hosts = [f"M{i}2@4Na" for i in range(12)]
    a = subset_hosts(hosts, 5, 0)
    assert len(a) == 5 and a <= set(hosts) and a == subset_hosts(list(reversed(hosts)), 5, 0)
    assert len({frozenset(subset_hosts(hosts, 5, s)) for s in range(6)}) > 1
    assert subset_hosts(hosts, 12, 1) == set(hosts)


def test_fine_tuning_batch_size_reaches_the_training_config():
    import argparse

    from screening.bench_anchor import _train_config, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--heldout", "Cu2@5Na"]
    assert _train_config(parser.parse_args(base), 3, 1e-3, True, ()).batch_size == 4  # the build-step recipe
    cfg = _train_config(parser.parse_args([*base, "--batch-size", "32"]), 3, 1e-3, True, ())
    assert (cfg.batch_size, cfg.epochs, cfg.lr) == (32, 3, 1e-3)
