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
