"""Multi-fidelity training (issue 10): pre-train on many cheap labels, fine-tune on a few expensive ones.

Toy two-fidelity problem: the high fidelity is ASE's EMT, the low fidelity a biased EMT (V0 x1.15, E0
+0.1 eV) on the same kind of Cu/Au cells. Fine-tuning the low-fidelity model on 6 high-fidelity frames must
beat both the low-fidelity model alone and a model trained from scratch on those 6 frames.
"""

from __future__ import annotations

import torch

from potentials import checkpoint
from potentials.testing import emt_dataset, emt_low_fidelity, tiny_train_configs
from potentials.train import evaluate, train

torch.set_num_threads(1)


def _cfg(epochs: int, lr: float = 2e-2):
    return tiny_train_configs(epochs, lr)


def test_fine_tune_on_few_high_fidelity_labels_beats_both_baselines(tmp_path):
    hi_all = emt_dataset(46, seed=7, with_stress=False)
    lo = emt_low_fidelity(emt_dataset(40, seed=11, with_stress=False))
    hi_train, hi_valid, hi_test = hi_all[:6], hi_all[6:10], hi_all[10:]
    assert (
        abs(lo[0].get_potential_energy() - emt_low_fidelity([lo[0]], 1.0, 0.0)[0].get_potential_energy())
        > 0.05
    )

    m, t = _cfg(epochs=30)
    pre = train(lo[:34], lo[34:], m, t, tmp_path / "pre", progress=False)
    m, t = _cfg(epochs=40, lr=1e-2)
    tuned = train(hi_train, hi_valid, m, t, tmp_path / "ft", progress=False, init_from=pre)
    m, t = _cfg(epochs=45)
    scratch = train(hi_train, hi_valid, m, t, tmp_path / "scratch", progress=False)

    err = {
        name: evaluate(checkpoint.load_model(p)[0], hi_test)
        for name, p in (("pretrained", pre), ("fine-tuned", tuned), ("scratch", scratch))
    }
    f = {k: v["forces_mae"] for k, v in err.items()}
    e = {k: v["energy_per_atom_mae"] for k, v in err.items()}
    assert f["fine-tuned"] < 0.8 * f["pretrained"], f
    assert f["fine-tuned"] < 0.8 * f["scratch"], f
    assert e["fine-tuned"] < e["pretrained"], e


def _shifted(frames, shifts):
    """Copies of ``frames`` whose energies are shifted by per-element constants ``shifts`` (eV/atom)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for a in frames:
        b = a.copy()
        e = a.get_potential_energy() + sum(shifts[s] for s in a.get_chemical_symbols())
        b.calc = SinglePointCalculator(b, energy=e, forces=a.get_forces())
        out.append(b)
    return out


def test_refit_e0s_removes_a_per_element_reference_shift_exactly(tmp_path):
    """Labels of a 'second code' = the model's own energies + per-element constants: after refit_e0s the
    model reproduces them to float64 precision, without any weight changing."""
    from potentials.train import refit_e0s

    frames = emt_dataset(8, seed=3, with_stress=False)
    m, t = _cfg(epochs=2)
    pre = train(frames[:6], frames[6:], m, t, tmp_path / "pre", progress=False)
    model, payload = checkpoint.load_model(pre)
    config = model.config
    own = evaluate(model, frames, return_predictions=True)["energy_pred"]
    relabelled = []
    from ase.calculators.singlepoint import SinglePointCalculator

    for a, e in zip(frames, own):
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=e, forces=a.get_forces())
        relabelled.append(b)
    shifts = {"Cu": -3.7, "Au": 1.25}
    target = _shifted(relabelled, shifts)
    weights = {k: v.clone() for k, v in model.state_dict().items() if k != "model.e0"}
    new_config = refit_e0s(model, config, target)
    after = evaluate(model, target, return_predictions=True)
    assert after["energy_mae"] < 1e-8, after["energy_mae"]
    for s, e_old, e_new in zip(config.elements, config.e0s, new_config.e0s):
        assert abs(e_new - e_old - shifts[s]) < 1e-8, (s, e_new - e_old)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


def test_fine_tune_with_refit_e0s_and_frozen_layers(tmp_path):
    """--refit-e0s + --trainable readout through train(): only readout weights move, the E0s follow the
    new labels, and a name that matches nothing is a clear error."""
    from dataclasses import replace

    import pytest

    from structures.common import InputError

    frames = emt_dataset(12, seed=5, with_stress=False)
    m, t = _cfg(epochs=2)
    pre = train(frames[:8], frames[8:], m, t, tmp_path / "pre", progress=False)
    hi = _shifted(emt_low_fidelity(frames), {"Cu": 2.0, "Au": -1.0})
    t_ft = replace(_cfg(epochs=3)[1], refit_e0s=True, trainable=("readout",))
    tuned = train(hi[:8], hi[8:], m, t_ft, tmp_path / "ft", progress=False, init_from=pre)
    before = checkpoint.load(pre)
    after = checkpoint.load(tuned)
    moved = {k for k, v in after["state_dict"].items() if not torch.equal(v, before["state_dict"][k])}
    assert moved and all("readout" in k or k == "model.e0" for k in moved), sorted(moved)
    assert "model.e0" in moved
    assert after["config"]["e0s"] != before["config"]["e0s"]
    e_pre = evaluate(checkpoint.load_model(pre)[0], hi)["energy_per_atom_mae"]
    e_ft = evaluate(checkpoint.load_model(tuned)[0], hi)["energy_per_atom_mae"]
    assert e_pre > 0.5 and e_ft < 0.25 * e_pre, (e_pre, e_ft)
    with pytest.raises(InputError, match="matches no parameter"):
        train(hi[:8], hi[8:], m, replace(t_ft, trainable=("nonsense",)), tmp_path / "bad", init_from=pre)
    with pytest.raises(InputError, match="needs init_from"):
        train(hi[:8], hi[8:], m, replace(t_ft, trainable=()), tmp_path / "bad2", progress=False)
