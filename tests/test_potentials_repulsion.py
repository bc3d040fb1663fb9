"""The ZBL short-range prior: its value against the published formula, the smooth switch, conservative
forces through the model, and the wall that keeps an H out of a nucleus."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms

from potentials import keys as K
from potentials import testing
from potentials.data import collate
from potentials.model import ModelConfig, build_model, preset
from potentials.nn import ZBLRepulsion

ELEMENTS = ("H", "C", "N", "Fe")


def _zbl_reference(z1: int, z2: int, r: float) -> float:
    """Unscreened-switch ZBL pair energy (eV), written out term by term from Ziegler, Biersack, Littmark."""
    a = 0.8854 * 0.529177 / (z1**0.23 + z2**0.23)  # 0.8854 a_B = 0.46850 Å
    x = r / a
    phi = (
        0.1818 * math.exp(-3.2 * x)
        + 0.5099 * math.exp(-0.9423 * x)
        + 0.2802 * math.exp(-0.4029 * x)
        + 0.02817 * math.exp(-0.2016 * x)
    )
    return 14.399645 * z1 * z2 / r * phi


def _zbl(inner=0.5, outer=0.75):
    from ase.data import atomic_numbers, covalent_radii

    zs = [atomic_numbers[e] for e in ELEMENTS]
    return ZBLRepulsion(zs, [float(covalent_radii[z]) for z in zs], inner, outer)


def test_pair_energy_matches_zbl_inside_the_switch():
    zbl = _zbl()
    r = torch.tensor([0.2, 0.4], dtype=torch.float64)  # N-H: switch starts at 0.5 x 1.02 Å = 0.51 Å
    got = zbl.pair_energy(r, torch.tensor([0, 0]), torch.tensor([2, 2]))
    want = [_zbl_reference(1, 7, float(x)) for x in r]
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-3)  # rounded coefficients in the reference
    assert got[0] > got[1] > 20.0  # a wall of tens of eV where the first model let H fall into N


def test_switch_is_smooth_and_ends_inside_the_bond():
    zbl = _zbl()
    r_out = 0.75 * (0.31 + 0.71)  # N-H, ASE covalent radii
    r = torch.tensor(
        [r_out - 2e-3, r_out - 1e-3, r_out + 1e-3, 1.01], dtype=torch.float64, requires_grad=True
    )
    e = zbl.pair_energy(r, torch.zeros(4, dtype=torch.long), torch.full((4,), 2))
    (g,) = torch.autograd.grad(e.sum(), r)
    assert e[2] == 0.0 and e[3] == 0.0 and g[2] == 0.0  # zero beyond r_out, and at the N-H bond length
    # C^2 switch: before r_out the energy vanishes as d^3 and the force as d^2
    e = e.detach()
    assert float(e[0] / e[1]) == pytest.approx(8.0, rel=0.05)
    assert float(g[0] / g[1]) == pytest.approx(4.0, rel=0.05)
    lo = zbl.pair_energy(
        torch.tensor([0.3, 0.5], dtype=torch.float64), torch.tensor([0, 0]), torch.tensor([2, 2])
    )
    assert lo[0] > lo[1] > 0.0  # monotonic wall


def test_model_forces_are_conservative_and_push_h_out_of_n():
    torch.manual_seed(0)
    cfg = preset("tiny", elements=ELEMENTS, dtype="float64", avg_num_neighbors=4.0)
    assert cfg.repulsion == "zbl"
    model = build_model(cfg).eval()
    atoms = Atoms("NH", positions=[(0, 0, 0), (0.35, 0.1, 0.05)], cell=[8, 8, 8], pbc=True)
    testing.assert_forces_match_fd(model, atoms, ELEMENTS, cfg.cutoff)
    batch = collate([atoms], ELEMENTS, cfg.cutoff, dtype=torch.float64, with_labels=False)
    f = model(batch)[K.FORCES].detach().numpy()
    bond = atoms.positions[1] - atoms.positions[0]
    assert f[1] @ bond > 10.0  # H pushed away from the nucleus, whatever the (untrained) network says
    # the prior is exactly the difference between a model with and without it
    off = build_model(ModelConfig.from_dict({**cfg.to_dict(), "repulsion": "none"})).eval()
    off.load_state_dict(model.state_dict())
    e_on, e_off = (float(m(batch)[K.ENERGY][0].detach()) for m in (model, off))
    r = float(np.linalg.norm(bond))
    assert e_on - e_off == pytest.approx(_zbl_reference(1, 7, r), rel=2e-3)


def test_old_configs_without_the_field_load_without_repulsion():
    d = preset("tiny", elements=ELEMENTS).to_dict()
    d.pop("repulsion")
    assert ModelConfig.from_dict(d).repulsion == "none"
    with pytest.raises(Exception, match="repulsion 'lj' not allowed"):
        ModelConfig.from_dict({**d, "repulsion": "lj"}).validate()
