"""ΔGH* and formation energies with σ from shared posterior samples, checked against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from screening.dgh import DGConfig, EnergyStats, dg_from_stats, h2_molecule, predict_energies
from screening.stability import (
    StabilityConfig,
    bulk_reference,
    formation_from_stats,
    pocket_reference,
    scan_bulk,
)
from screening.testing import MorseEnsemble
from structures.common import InputError
from structures.host import build_host
from structures.sites import add_h, h_sites

torch.set_num_threads(1)


def _stats(samples, var):
    samples = np.asarray(samples, dtype=float)
    return EnergyStats(mean=samples.mean(0), samples=samples, var_aleatoric=np.asarray(var, dtype=float))


def test_dg_hand_computed_with_samples():
    # K = 3 samples; host, two H* states, H2
    host = _stats([[-100.0], [-100.2], [-99.9]], [0.04])
    states = _stats([[-104.0, -103.5], [-104.1, -103.9], [-103.8, -103.0]], [0.09, 0.01])
    h2 = _stats([[-6.8], [-6.7], [-6.9]], [0.0016])
    res = dg_from_stats(host, states, ["top_M1", "top_X0"], h2, DGConfig(correction=0.24))
    # by hand: mean energies host -100.0333, state0 -103.9667, H2 -6.8
    e_host, e_s, e_h2 = -300.1 / 3, -311.9 / 3, -6.8
    assert res.best_site == "top_M1" and res.best_index == 0
    assert res.dg == pytest.approx(e_s - e_host - 0.5 * e_h2 + 0.24, abs=1e-12)
    per_sample = [-104.0 + 100.0 + 3.4 + 0.24, -104.1 + 100.2 + 3.35 + 0.24, -103.8 + 99.9 + 3.45 + 0.24]
    assert np.allclose(res.dg_samples, per_sample)
    assert res.dg_std_epistemic == pytest.approx(np.std(per_sample), abs=1e-12)
    assert res.dg_std_aleatoric == pytest.approx(np.sqrt(0.09 + 0.04 + 0.25 * 0.0016), abs=1e-12)
    assert res.dg_std == pytest.approx(np.sqrt(np.std(per_sample) ** 2 + 0.09 + 0.04 + 0.0004), abs=1e-12)
    assert res.site_agreement == pytest.approx(1.0)
    assert res.site_dg["top_X0"] == pytest.approx(-103.4667 + 100.0333 + 3.4 + 0.24, abs=1e-3)


def test_sigma_keeps_the_correlation_between_host_and_adsorbate():
    # a common shift in every sample (e.g. a per-sample E0 error) cancels in ΔG although each energy spreads
    shift = np.array([[-1.0], [0.0], [1.0]])
    host = _stats(-50.0 + shift, [0.0])
    states = _stats(-53.0 + shift, [0.0])
    h2 = _stats([[-6.8], [-6.8], [-6.8]], [0.0])
    res = dg_from_stats(host, states, ["top_M1"], h2, DGConfig())
    assert np.std(host.samples) > 0.8
    assert res.dg_std_epistemic == pytest.approx(0.0, abs=1e-12)


def test_aleatoric_correlation_and_site_choice_rules():
    host = _stats([[-10.0]], [0.04])
    states = _stats([[-14.0, -14.5, np.nan]], [0.09, 0.01, 0.01])
    h2 = _stats([[-6.8]], [0.0])
    # eligible excludes the lowest state (e.g. H desorbed) -> the next one; NaN states are never chosen
    res = dg_from_stats(
        host, states, ["a", "b", "c"], h2, DGConfig(aleatoric_correlation=1.0), eligible=[True, False, True]
    )
    assert res.best_site == "a"
    assert res.dg_std_aleatoric == pytest.approx(abs(0.3 - 0.2), abs=1e-12)  # perfectly correlated: |σ1 - σ2|
    res = dg_from_stats(host, states, ["a", "b", "c"], h2, DGConfig(), eligible=[False, False, False])
    assert res.best_site == "b"  # nothing eligible: fall back to every finite state


def test_site_fixed_at_mean_lowest_and_agreement_reported():
    host = _stats([[0.0], [0.0], [0.0], [0.0]], [0.0])
    # site a lowest on average, but sample 3 prefers b
    states = _stats([[-1.0, -0.5], [-1.0, -0.6], [-1.0, -0.7], [-0.5, -0.9]], [0.0, 0.0])
    h2 = _stats([[0.0]] * 4, [0.0])
    res = dg_from_stats(host, states, ["a", "b"], h2, DGConfig(correction=0.0))
    assert res.best_site == "a"
    assert np.allclose(res.dg_samples, [-1.0, -1.0, -1.0, -0.5])  # sample 3 still uses site a
    assert res.site_agreement == pytest.approx(0.75)


def test_predict_energies_uses_one_call_with_shared_samples():
    post = MorseEnsemble(("H", "C", "N", "Fe"))
    host = build_host("Fe", "3Nb", supercell="4x4")
    state = add_h(host, h_sites(host)[0])
    h2 = h2_molecule()
    stats = predict_energies(post, [host, state, h2])
    assert stats.samples.shape == (post.config.n_members, 3)
    for i, atoms in enumerate([host, state, h2]):  # each structure alone gives the same member energies
        alone = predict_energies(post, [atoms])
        assert np.allclose(alone.samples[:, 0], stats.samples[:, i], atol=1e-10)
    res = dg_from_stats(stats.take([0]), stats.take([1]), ["s"], stats.take([2]), DGConfig())
    by_hand = stats.samples[:, 1] - stats.samples[:, 0] - 0.5 * stats.samples[:, 2] + 0.24
    assert res.dg_std_epistemic == pytest.approx(np.std(by_hand), abs=1e-12)
    assert res.dg == pytest.approx(stats.mean[1] - stats.mean[0] - 0.5 * stats.mean[2] + 0.24, abs=1e-12)


def test_formation_energy_hand_computed_homo_pair_is_fully_correlated():
    host = _stats([[-60.0], [-61.0]], [0.04])
    pocket = _stats([[-50.0], [-50.5]], [0.01])
    bulk = _stats([[-16.0], [-17.0]], [0.0016])  # 2-atom cell
    res = formation_from_stats(
        host, pocket, [(bulk, 2), (bulk, 2)], StabilityConfig(max_formation_energy=-5.0)
    )
    samples = np.array([-60.0 + 50.0 + 16.0, -61.0 + 50.5 + 17.0])
    assert np.allclose(res.samples, samples)
    assert res.e_form == pytest.approx(samples.mean())
    assert res.e_form_std_epistemic == pytest.approx(np.std(samples))
    assert res.e_form_std_aleatoric == pytest.approx(np.sqrt(0.04 + 0.01 + (2 * 0.04 / 2) ** 2))
    assert res.aggregates is True  # 6.25 eV > -5 eV cut-off
    res = formation_from_stats(
        host, pocket, [(bulk, 2), (bulk, 2)], StabilityConfig(max_formation_energy=10.0)
    )
    assert res.aggregates is False


def test_references_bulk_pocket_and_h2():
    host = build_host("Fe", "3Nb", supercell="4x4")
    pocket = pocket_reference(host)
    assert len(pocket) == len(host) - 2 and "Fe" not in pocket.get_chemical_symbols()
    assert pocket.info["name"] == "pocket@3Nb/4x4"
    assert len(bulk_reference("Co")) == 2 and len(bulk_reference("Fe")) == 1
    assert len(bulk_reference("Mn")) == 1  # fallback lattice
    post = MorseEnsemble(("H", "C", "N", "Fe"))
    scales = (0.9, 0.95, 1.0, 1.05, 1.1)
    best = scan_bulk(post, bulk_reference("Fe"), scales)
    e_best = predict_energies(post, [best]).mean[0]
    for s in scales:
        trial = bulk_reference("Fe")
        trial.set_cell(trial.cell * s, scale_atoms=True)
        assert e_best <= predict_energies(post, [trial]).mean[0] + 1e-9
    h2 = h2_molecule()
    assert h2.get_distance(0, 1) == pytest.approx(0.737, abs=0.01) and all(h2.pbc)


def test_dg_config_validation():
    with pytest.raises(InputError, match="samples"):
        DGConfig(n_samples=0).validate()
    with pytest.raises(InputError, match="correlation"):
        DGConfig(aleatoric_correlation=1.5).validate()
    with pytest.raises(InputError, match="correction"):
        DGConfig(correction=float("nan")).validate()


def test_recalibrated_posterior_scales_the_sample_spread_of_dg():
    """A posterior recalibrated with energy sigma factor s: ΔGH*'s epistemic σ (from the samples) is s times
    the raw one, its mean unchanged (the samples are raw draws; the factor lives in posterior.recal)."""
    from potentials.bayes.base import RecalibrationPair
    from potentials.calibration import Recalibration

    post = MorseEnsemble(("H", "C", "N", "Fe"))
    host = build_host("Fe", "3Nb", supercell="4x4")
    structs = [host, add_h(host, h_sites(host)[0]), h2_molecule()]
    raw = predict_energies(post, structs)
    post.recal = RecalibrationPair(Recalibration("scale", 0.25), Recalibration("scale", 1.0))
    cal = predict_energies(post, structs)
    np.testing.assert_allclose(cal.mean, raw.mean, atol=1e-12)
    np.testing.assert_allclose(cal.samples - cal.mean, 0.25 * (raw.samples - raw.mean), atol=1e-12)
    dg_raw, dg_cal = (
        dg_from_stats(s.take([0]), s.take([1]), ["s"], s.take([2]), DGConfig()) for s in (raw, cal)
    )
    assert dg_raw.dg_std_epistemic > 1e-6
    assert dg_cal.dg_std_epistemic == pytest.approx(0.25 * dg_raw.dg_std_epistemic, rel=1e-9)
    assert dg_cal.dg == pytest.approx(dg_raw.dg, abs=1e-12)


def test_dg_sigma_factor_scales_both_sigma_parts_not_the_mean():
    from potentials.bayes.base import RecalibrationPair
    from screening.dgh import dg_sigma_scale

    host = _stats([[-100.0], [-100.2], [-99.9]], [0.04])
    states = _stats([[-104.0, -103.5], [-104.1, -103.9], [-103.8, -103.0]], [0.09, 0.01])
    h2 = _stats([[-6.8], [-6.7], [-6.9]], [0.0016])
    one = dg_from_stats(host, states, ["a", "b"], h2, DGConfig())
    three = dg_from_stats(host, states, ["a", "b"], h2, DGConfig(), sigma_scale=3.0)
    assert three.dg == one.dg and three.best_site == one.best_site
    assert three.dg_std_epistemic == pytest.approx(3 * one.dg_std_epistemic, rel=1e-12)
    assert three.dg_std_aleatoric == pytest.approx(3 * one.dg_std_aleatoric, rel=1e-12)
    assert three.dg_std == pytest.approx(3 * one.dg_std, rel=1e-12)
    assert np.mean(three.dg_samples) == pytest.approx(np.mean(one.dg_samples), abs=1e-12)
    post = MorseEnsemble(("H", "C"))
    assert dg_sigma_scale(post) == 1.0  # no recalibration at all
    post.recal = RecalibrationPair(dg=2.5)
    assert dg_sigma_scale(post) == 2.5
    post.recal = RecalibrationPair(dg=float("nan"))
    assert dg_sigma_scale(post) == 1.0


def test_dft_anchor_shifts_every_site_and_adds_its_sigma_in_quadrature():
    host = _stats([[-100.0], [-100.2], [-99.9]], [0.04])
    states = _stats([[-104.0, -103.5], [-104.1, -103.9], [-103.8, -103.0]], [0.09, 0.01])
    h2 = _stats([[-6.8], [-6.7], [-6.9]], [0.0016])
    bare = dg_from_stats(host, states, ["top_M1", "top_X0"], h2, DGConfig())
    res = dg_from_stats(host, states, ["top_M1", "top_X0"], h2, DGConfig(), anchor=(0.8, 0.3))
    assert res.best_site == bare.best_site  # a constant shift never changes the site
    assert res.dg == pytest.approx(bare.dg + 0.8, abs=1e-12)
    assert res.site_dg["top_X0"] == pytest.approx(bare.site_dg["top_X0"] + 0.8, abs=1e-12)
    assert np.allclose(res.dg_samples, bare.dg_samples + 0.8)
    assert res.dg_std_epistemic == pytest.approx(np.hypot(bare.dg_std_epistemic, 0.3), abs=1e-12)
    assert res.dg_std_aleatoric == pytest.approx(bare.dg_std_aleatoric, abs=1e-12)
    assert res.dg_std == pytest.approx(np.hypot(bare.dg_std, 0.3), abs=1e-12)


def test_dg_anchor_reads_the_posterior_recalibration():
    from types import SimpleNamespace

    from potentials.bayes.base import RecalibrationPair
    from screening.dgh import dg_anchor

    assert dg_anchor(SimpleNamespace()) == (0.0, 0.0)
    rec = RecalibrationPair(dg_offset=0.7, dg_sigma_add=-0.2, anchor={"method": "offset"})
    assert dg_anchor(SimpleNamespace(recal=rec)) == (0.7, 0.2)
    back = RecalibrationPair.from_payload({"extra": {"recalibration": rec.to_dict()}})
    assert (back.dg_offset, back.dg_sigma_add, back.anchor) == (0.7, -0.2, {"method": "offset"})
    old = RecalibrationPair.from_payload({"extra": {"recalibration": RecalibrationPair().to_dict()}})
    assert (old.dg_offset, old.dg_sigma_add, old.anchor) == (0.0, 0.0, None)
    assert "dg_offset" not in RecalibrationPair().to_dict()  # files without anchoring keep their bytes
