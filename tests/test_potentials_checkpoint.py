"""Checkpoint round trips and failures, the point posterior and the ASE calculator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from potentials import checkpoint
from potentials import keys as K
from potentials.bayes import load_posterior, register
from potentials.bayes.point import PointPosterior
from potentials.calculator import BayesianCalculator
from potentials.data import collate
from potentials.model import build_model, preset
from potentials.posterior import Posterior, Prediction
from potentials.testing import assert_equivariant_outputs, assert_forces_match_fd
from structures.common import InputError

ELEMENTS = ("H", "C", "O", "Cu")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    cfg = preset(
        "tiny", elements=ELEMENTS, dtype="float64", avg_num_neighbors=6.0, e0s=(-1.0, -2.0, -3.0, -4.0)
    )
    model = build_model(cfg).eval()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    digest = checkpoint.save(
        path, model, cfg, extra={"note": "test", "array": torch.arange(3)}, calibration={"energy": 1.5}
    )
    return path, model, cfg, digest


def _atoms():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=0)
    return atoms


def test_round_trip_gives_identical_predictions(saved):
    path, model, cfg, digest = saved
    loaded, payload = checkpoint.load_model(path)
    assert payload["hash"] == digest == checkpoint.model_hash(path)
    assert payload["elements"] == list(ELEMENTS) and payload["e0s"]["Cu"] == -4.0
    assert payload["calibration"] == {"energy": 1.5} and payload["extra"]["note"] == "test"
    batch = collate([_atoms(), bulk("Cu", cubic=True)], ELEMENTS, cfg.cutoff, dtype=torch.float64)
    a, b = model(batch, compute_stress=True), loaded(batch, compute_stress=True)
    for key in (K.ENERGY, K.FORCES, K.STRESS, K.ENERGY_VAR, K.FORCES_COV):
        assert torch.equal(a[key], b[key]), key
    # saving the same weights again gives the same content hash
    assert (
        checkpoint.save(
            path.with_name("again.pt"),
            loaded,
            cfg,
            extra={"note": "test", "array": torch.arange(3)},
            calibration={"energy": 1.5},
        )
        == digest
    )


def test_missing_truncated_corrupted_and_wrong_version(saved, tmp_path):
    path, model, cfg, _ = saved
    with pytest.raises(InputError, match="not found"):
        checkpoint.load(tmp_path / "nope.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupted"):
        checkpoint.load(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(InputError, match="truncated or corrupted"):
        checkpoint.load(tmp_path / "text.pt")
    # flip bits inside the stored weights: the file still unpickles, the content hash catches it
    payload = checkpoint.load(path)
    payload["state_dict"]["model.readout_last.weight"] += 1e-3
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(InputError, match="content hash mismatch"):
        checkpoint.load(tmp_path / "tampered.pt")
    payload = checkpoint.load(path)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "v99.pt")
    with pytest.raises(InputError, match="format version 99"):
        checkpoint.load(tmp_path / "v99.pt")
    del payload["state_dict"]
    torch.save(payload, tmp_path / "nokeys.pt")
    with pytest.raises(InputError, match="lacks key.*state_dict"):
        checkpoint.load(tmp_path / "nokeys.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(InputError, match="not a potential checkpoint"):
        checkpoint.load(tmp_path / "list.pt")


def test_load_posterior_dispatch(saved, tmp_path):
    path, *_ = saved
    posterior = load_posterior(path)
    assert isinstance(posterior, PointPosterior) and isinstance(posterior, Posterior)
    payload = checkpoint.load(path)
    payload["method"] = "nosuchmethod"
    payload["hash"] = checkpoint.content_hash(payload)
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(InputError, match="method 'nosuchmethod' is not available"):
        load_posterior(tmp_path / "other.pt")
    register("nosuchmethod", "potentials.bayes.point")  # an out-of-tree method registered by name
    assert isinstance(load_posterior(tmp_path / "other.pt"), PointPosterior)


def test_point_posterior_prediction(saved):
    path, model, cfg, _ = saved
    posterior = load_posterior(path)
    batch = collate([_atoms(), molecule("H2O")], ELEMENTS, cfg.cutoff, dtype=torch.float64)
    pred = posterior.predict(batch)
    assert isinstance(pred, Prediction)
    out = model(batch)
    torch.testing.assert_close(pred.energy, out[K.ENERGY].detach())
    assert torch.equal(pred.energy_var_epistemic, torch.zeros(2, dtype=torch.float64))
    assert pred.energy_samples.shape == (1, 2) and pred.forces_samples.shape == (1, 12, 3)
    # calibration factor 1.5 scales the aleatoric energy standard deviation
    torch.testing.assert_close(pred.energy_var_aleatoric, 1.5**2 * out[K.ENERGY_VAR].detach())
    torch.testing.assert_close(
        pred.forces_var_aleatoric, torch.diagonal(out[K.FORCES_COV].detach(), dim1=1, dim2=2)
    )
    mean = posterior.mean_forward(batch)
    torch.testing.assert_close(mean[K.FORCES], pred.forces)
    assert_equivariant_outputs(posterior.mean_forward, _atoms(), ELEMENTS, cfg.cutoff, atol=1e-9)


def test_calculator(saved):
    path, model, cfg, _ = saved
    calc = BayesianCalculator(path)
    atoms = _atoms()
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    ref = model(collate([atoms], ELEMENTS, cfg.cutoff, dtype=torch.float64))
    assert energy == pytest.approx(float(ref[K.ENERGY].detach()[0]), abs=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), ref[K.FORCES].detach().numpy(), atol=1e-12)
    std = calc.get_property("energy_std", atoms)
    assert std == pytest.approx(1.5 * float(ref[K.ENERGY_VAR].detach()[0]) ** 0.5)
    assert calc.get_property("forces_std", atoms).shape == (len(atoms), 3)
    # forces of the calculator are the gradient of its energy
    assert_forces_match_fd(calc.posterior.mean_forward, atoms, ELEMENTS, cfg.cutoff, atol=1e-7, n_atoms=2)
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.rattle(0.05, seed=1)
    cu.calc = calc
    assert cu.get_stress().shape == (6,)
    fe = Atoms("Fe2", positions=[(0, 0, 0), (2.0, 0, 0)])
    fe.calc = calc
    with pytest.raises(InputError, match="unknown element Fe in Fe2; the model knows H, C, O, Cu"):
        fe.get_potential_energy()
