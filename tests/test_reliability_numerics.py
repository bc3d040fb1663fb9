"""Numerical faults: relaxations that explode, oscillate or turn NaN are stopped and flagged (never a crash);
a posterior sample that gives NaN is dropped from σ and counted; the run summary says how many and why."""

from __future__ import annotations

import io
import math

import ase.db
import numpy as np
import pytest
import torch

from potentials import keys as K
from screening.dgh import EnergyStats, dg_from_stats, predict_energies
from screening.pipeline import ScreenConfig, format_summary, handle_from_loader, run_screen
from screening.relax import RelaxConfig, relax_many
from screening.stability import StabilityConfig, formation_from_stats
from screening.store import load_results
from screening.testing import MorseEnsemble
from structures.host import build_host

torch.set_num_threads(1)

ELEMENTS = ("H", "C", "N", "Fe", "Co", "Ni", "Cu")
Z = {"Co": 27, "Ni": 28, "Cu": 29}


def _graphs_with(batch, symbol: str) -> torch.Tensor:
    """(G,) bool: graphs that contain an atom of ``symbol``."""
    g = torch.zeros(batch[K.NUM_ATOMS].shape[0], dtype=torch.bool)
    g[batch[K.BATCH][batch[K.ATOMIC_NUMBERS] == Z[symbol]]] = True
    return g


class FaultyForceField(MorseEnsemble):
    """Morse everywhere except: Co structures are pushed apart (they explode), Ni structures feel a
    tangential, non-conservative swirl at constant energy (they never improve: oscillating), Cu structures
    turn NaN after a few evaluations. Energies and forces per structure; units eV, eV/Å."""

    def __init__(self, nan_after: int = 4):
        super().__init__(ELEMENTS)
        self.nan_after = nan_after
        self.calls = 0

    def mean_forward(self, batch, compute_stress=False):
        out = super().mean_forward(batch)
        self.calls += 1
        e, f = out[K.ENERGY].clone(), out[K.FORCES].clone()
        pos, b = batch[K.POSITIONS].to(torch.float64), batch[K.BATCH]
        g = int(batch[K.NUM_ATOMS].shape[0])
        centre = torch.zeros(g, 3, dtype=pos.dtype).index_add_(0, b, pos) / batch[K.NUM_ATOMS][:, None]
        r = pos - centre[b]
        co, ni, cu = (_graphs_with(batch, s) for s in ("Co", "Ni", "Cu"))
        # Co: E = -2 Σ |r - c|², F = +4 (r - c): a consistent, unbounded downhill -> atoms fly apart
        e_co = torch.zeros(g, dtype=pos.dtype).index_add_(0, b, -2.0 * (r * r).sum(1))
        e = torch.where(co, e_co, e)
        f = torch.where(co[b][:, None], 4.0 * r, f)
        # Ni: constant energy, forces 0.3 ẑ × (r - c): never a new lowest energy
        swirl = 0.3 * torch.stack([-r[:, 1], r[:, 0], torch.zeros_like(r[:, 0])], dim=1)
        e = torch.where(ni, torch.full_like(e, -100.0), e)
        f = torch.where(ni[b][:, None], swirl, f)
        if self.calls > self.nan_after:  # Cu: the model breaks down mid-relaxation
            e = torch.where(cu, torch.full_like(e, math.nan), e)
            f = torch.where(cu[b][:, None], torch.full_like(f, math.nan), f)
        return {K.ENERGY: e, K.FORCES: f}


def _faulty():
    return FaultyForceField()


RELAX = RelaxConfig(max_steps=120, batch_size=8, patience=25)


def test_each_fault_stops_its_relaxation_with_its_status():
    posterior = FaultyForceField()
    hosts = [build_host(m, "3Nb", supercell="4x4") for m in ("Fe", "Co", "Ni", "Cu")]
    results = {r.index: r for r in relax_many(hosts, posterior.mean_forward, config=RELAX)}
    status = {hosts[i].info["metal"]: r.status for i, r in results.items()}
    assert status.pop("Fe") in ("converged", "max_steps")  # the healthy one runs its normal course
    assert status == {"Co": "exploded", "Ni": "oscillating", "Cu": "nonfinite"}
    co, ni, cu = (results[i] for i in (1, 2, 3))
    assert co.max_displacement > RELAX.max_displacement or co.fmax > RELAX.explode_fmax
    assert ni.n_steps <= RELAX.patience + 1 and ni.fmax > RELAX.fmax  # stopped early, not converged
    assert not math.isfinite(cu.energy) and cu.n_steps < RELAX.max_steps


def test_a_screen_with_faulty_relaxations_finishes_and_reports_what_was_flagged_and_why(tmp_path):
    db = tmp_path / "faults.db"
    config = ScreenConfig(metals="Fe,Co,Ni,Cu", motifs="3Nb", supercell="4x4", relax=RELAX, progress=False)
    out = io.StringIO()
    summary = run_screen(config, db, model=handle_from_loader(_faulty), out=out)
    assert summary.n_relaxed == summary.n_structures == 40
    rows = list(ase.db.connect(str(db)).select(kind="structure", state="relaxed"))
    by_host: dict[str, set[str]] = {}
    for row in rows:
        by_host.setdefault(row.host, set()).add(row.status)
    assert "exploded" in by_host["Co2@3Nb"] and by_host["Ni2@3Nb"] == {"oscillating"}
    assert by_host["Cu2@3Nb"] == {"nonfinite"} and "nonfinite" not in by_host["Fe2@3Nb"]
    df = load_results(db).set_index("host")
    assert df.loc["Cu2@3Nb", "flag_nonfinite"] and df.loc["Co2@3Nb", "flag_not_converged"]
    assert df.loc["Ni2@3Nb", "flag_not_converged"] and not df.loc["Fe2@3Nb", "flag_nonfinite"]
    counts = summary.status_counts
    assert sum(counts.values()) == 40 and counts["oscillating"] == 10 and counts["nonfinite"] == 10
    text = out.getvalue()
    assert "relaxations by outcome: " in text
    assert f"exploded {counts['exploded']}" in text and "oscillating 10" in text and "nonfinite 10" in text
    reasons = text.split("flagged hosts by reason: ")[1].splitlines()[0]
    assert f"nonfinite {int(df.flag_nonfinite.sum())}" in reasons
    assert f"not_converged {int(df.flag_not_converged.sum())}" in reasons
    assert format_summary(summary) == text  # the same summary can be printed again from the stored results


# ---- NaN posterior samples -----------------------------------------------------------------------------------
def _stats(samples, var):
    samples = np.asarray(samples, dtype=float)
    with np.errstate(invalid="ignore"):
        mean = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in samples.T])
    return EnergyStats(mean=mean, samples=samples, var_aleatoric=np.asarray(var, dtype=float))


def test_a_nan_sample_is_dropped_from_sigma_and_counted():
    host = _stats([[-100.0], [np.nan], [-100.2], [-99.9]], [0.01])
    states = _stats([[-104.0, -103.0], [-104.1, np.nan], [-104.1, -103.9], [-103.8, -103.0]], [0.01, 0.01])
    h2 = _stats([[-6.8], [-6.7], [-6.7], [-6.9]], [0.0])
    res = dg_from_stats(host, states, ["a", "b"], h2)
    kept = [0, 2, 3]
    per_sample = [states.samples[k, 0] - host.samples[k, 0] - 0.5 * h2.samples[k, 0] + 0.24 for k in kept]
    assert res.n_samples_dropped == 1 and res.sample_mask.tolist() == [True, False, True, True]
    assert np.allclose(res.dg_samples, per_sample)
    assert res.dg_std_epistemic == pytest.approx(np.std(per_sample), abs=1e-12)
    assert math.isfinite(res.dg_std) and res.site_agreement == pytest.approx(1.0)
    pocket = _stats([[-80.0], [-80.1], [np.nan], [-80.0]], [0.0])
    bulk = _stats([[-8.0], [-8.1], [-8.0], [-8.2]], [0.0])
    form = formation_from_stats(host, pocket, [(bulk, 1), (bulk, 1)], StabilityConfig())
    assert form.sample_mask.tolist() == [True, False, False, True] and len(form.samples) == 2
    assert math.isfinite(form.e_form_std)


def test_all_samples_nan_gives_nan_and_the_nonfinite_flag_follows():
    host = _stats([[np.nan], [np.nan]], [0.0])
    states = _stats([[-4.0], [-4.1]], [0.0])
    h2 = _stats([[-6.8], [-6.8]], [0.0])
    res = dg_from_stats(host, states, ["a"], h2)
    assert res.n_samples_dropped == 2 and math.isnan(res.dg) and math.isnan(res.dg_std)


class NaNSampleEnsemble(MorseEnsemble):
    """Posterior sample 1 gives NaN for every structure that holds Fe (a broken ensemble member)."""

    def __init__(self):
        super().__init__(ELEMENTS)

    def predict(self, batch, n_samples=None, forces=True):
        pred = super().predict(batch, n_samples, forces)
        bad = torch.zeros(batch[K.NUM_ATOMS].shape[0], dtype=torch.bool)
        bad[batch[K.BATCH][batch[K.ATOMIC_NUMBERS] == 26]] = True
        pred.energy_samples[1, bad] = math.nan
        pred.energy_var_samples[1, bad] = math.nan
        pred.energy = pred.energy_samples.mean(0)  # the ensemble mean turns NaN with it
        pred.energy_var_aleatoric = pred.energy_var_samples.mean(0)
        return pred


def _nan_sample():
    return NaNSampleEnsemble()


def test_predict_energies_recovers_the_mean_from_the_finite_samples():
    posterior = NaNSampleEnsemble()
    atoms = [build_host("Fe", "3Nb", supercell="4x4"), build_host("Co", "3Nb", supercell="4x4")]
    stats = predict_energies(posterior, atoms)
    clean = predict_energies(MorseEnsemble(ELEMENTS), atoms)
    assert np.isnan(stats.samples[1, 0]) and np.isfinite(stats.mean).all()
    assert stats.mean[0] == pytest.approx(np.mean(clean.samples[[0, 2, 3], 0]), abs=1e-9)
    assert stats.mean[1] == pytest.approx(clean.mean[1], abs=1e-12)  # Co host untouched


def test_a_screen_drops_and_counts_nan_samples(tmp_path):
    db = tmp_path / "nan_samples.db"
    config = ScreenConfig(metals="Fe,Co", motifs="3Nb", supercell="4x4", relax=RELAX, progress=False)
    out = io.StringIO()
    run_screen(config, db, model=handle_from_loader(_nan_sample), out=out)
    df = load_results(db, with_data=True).set_index("host")
    fe, co = df.loc["Fe2@3Nb"], df.loc["Co2@3Nb"]
    assert fe.n_samples == 4 and fe.n_samples_dropped == 1 and co.n_samples_dropped == 0
    assert math.isfinite(fe.dg) and math.isfinite(fe.dg_std) and math.isfinite(fe.e_form_std)
    assert len(fe.dg_samples) == 3 and len(co.dg_samples) == 4
    assert fe.dg_std_epistemic == pytest.approx(np.std(fe.dg_samples), abs=1e-12)
    assert "nonfinite" not in fe["flags"]
    assert "non-finite posterior samples dropped: 1 in 1 host(s)" in out.getvalue()


# ---- a spurious minimum: H* that stretches the metal pair ---------------------------------------------------
class PairSpringField(MorseEnsemble):
    """Morse, plus a spring (40 eV/Å²) that holds the two Fe atoms 4.0 Å apart: in every structure holding an
    H atom (``h_only``: H* relaxes into a stretched pair that the host does not have, as v0.5.1 at Rh2@2Nd),
    or in every structure (host and H* share the pair's length)."""

    def __init__(self, h_only: bool = True):
        super().__init__(ELEMENTS)
        self.h_only = h_only

    def _member_energies(self, batch, pos):
        e = super()._member_energies(batch, pos)
        z, b = batch[K.ATOMIC_NUMBERS], batch[K.BATCH]
        for g in range(int(batch[K.NUM_ATOMS].shape[0])):
            here = b == g
            fe = torch.nonzero(here & (z == 26)).flatten()
            if ((z[here] == 1).any() or not self.h_only) and len(fe) == 2:
                d = (pos[fe[1]] - pos[fe[0]]).norm()
                e = e + torch.nn.functional.one_hot(torch.tensor(g), e.shape[1]).to(e) * 40.0 * (d - 4.0) ** 2
        return e


@pytest.mark.parametrize("h_only", [True, False])
def test_a_screen_flags_the_host_whose_best_h_site_stretches_the_metal_pair(tmp_path, h_only):
    from screening.flags import FlagConfig, metal_geometry
    from screening.store import _record

    flags = FlagConfig(max_mm_distance=10.0)  # the 4 Å pair is not a break-up here
    config = ScreenConfig(
        metals="Fe", motifs="3Nb", supercell="4x4", relax=RELAX, flags=flags, progress=False
    )
    db = tmp_path / "stretch.db"
    summary = run_screen(config, db, model=handle_from_loader(lambda: PairSpringField(h_only)), out=None)
    fe = load_results(db).set_index("host").loc["Fe2@3Nb"]
    rows = ase.db.connect(str(db))
    host = _record(next(rows.select(kind="structure", state="relaxed", host="Fe2@3Nb", ads_index=-1))).atoms
    best = _record(next(rows.select(kind="structure", state="relaxed", host="Fe2@3Nb", site=fe["best_site"])))
    stretch = metal_geometry(best.atoms)["mm_distance"] - metal_geometry(host)["mm_distance"]
    assert fe["mm_stretch"] == pytest.approx(stretch, abs=1e-9)
    if h_only:
        assert fe["mm_stretch"] > 0.3 and fe["flag_pair_stretched"] and "pair_stretched" in fe["flags"]
    else:
        assert abs(fe["mm_stretch"]) < 0.1 and not fe["flag_pair_stretched"]
    # the run summary names the host and the command that labels a sane site
    text = format_summary(summary)
    assert ("pair_stretched (Fe2@3Nb)" in text and "--select flag:pair_stretched" in text) == h_only
